"""The browser UI end to end: Debian's Chromium, headless, driven by Playwright, against
the session stack's web app, Triton and MLflow. Screenshots are kept in test-artifacts/."""

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from cartridge.stack import up
from cartridge.stack.manager import _load_state, _stop

CHROMIUM = os.environ.get("CARTRIDGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CARTRIDGE_TEST_ARTIFACTS", "test-artifacts"))
RESULTS = ("You win!", "You lose.", "Draw.")
# Without the background-networking switches Chromium keeps dialling out, which this
# closed network refuses, slowly.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENABLED_CELL = "#board [data-action]:not([disabled])"


def marks(page, player):
    """Cells holding `player`'s mark, read from the cells' accessible names."""
    return page.locator(f'#board [aria-label*=", {player}"]').count()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: set CARTRIDGE_CHROMIUM, or let `make test` install "
            "Debian's chromium package"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, local_stack, served_champions):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(local_stack.web_url)
    expect(page.locator("#game-select")).to_have_value("tictactoe")
    yield page
    context.close()
    assert not errors, errors


def _wait_for_turn(page):
    """Until the human may move again or the game is over."""
    try:
        page.wait_for_function(
            """() => document.querySelector('#result').textContent.trim() !== ''
                || document.querySelector('#board [data-action]:not([disabled])') !== null"""
        )
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-stuck.png"), full_page=True)
        raise AssertionError(
            f"the page never handed the turn back: status {page.inner_text('#status')!r}, "
            f"banner {page.inner_text('#banner')!r}, lineage {page.inner_text('#lineage')!r}"
        ) from None


def test_play_a_whole_tictactoe_game_by_clicking(page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect(page.locator("#lineage")).to_contain_text("READY")
    moves = 0
    while not page.locator("#result").text_content().strip():
        _wait_for_turn(page)
        if page.locator("#result").text_content().strip():
            break
        page.locator(ENABLED_CELL).first.click()
        moves += 1
        assert moves <= 5
    assert page.locator("#result").text_content().strip() in RESULTS
    assert page.locator(ENABLED_CELL).count() == 0  # nothing to click after the end
    assert marks(page, "X") == moves  # every click placed one mark
    page.screenshot(path=str(ARTIFACTS / "browser-tictactoe.png"), full_page=True)


def test_keyboard_play_and_the_bots_probabilities(page):
    page.select_option("#side-select", "1")  # the bot opens as X
    _wait_for_turn(page)
    expect(page.locator("#evaluation")).to_contain_text("Bot's evaluation")
    assert "%" in page.locator("#board").inner_text()
    page.locator(ENABLED_CELL).first.focus()
    page.keyboard.press("Enter")
    _wait_for_turn(page)
    assert marks(page, "O") == 1 and marks(page, "X") == 2


def test_triton_down_shows_a_message_and_retry_continues(page, local_stack):
    # The page's timers run on a clock the test holds: its automatic retry (after
    # Retry-After) cannot fire while the clock is paused, so only the Retry button can
    # bring the game back below.
    page.clock.install()
    page.reload()
    _wait_for_turn(page)
    _stop("triton", _load_state(local_stack)["triton"])
    try:
        page.locator(ENABLED_CELL).first.click()
        expect(page.locator("#banner")).to_be_visible()
        expect(page.locator("#banner")).to_contain_text("Triton is not reachable")
        now_ms = page.evaluate("Date.now()")
        page.clock.pause_at(datetime.fromtimestamp(now_ms / 1000 + 0.1, tz=UTC))
    finally:
        up(local_stack)
    expect(page.locator("#banner")).to_be_visible()  # nothing retried by itself
    page.locator("#retry").click()
    expect(page.locator("#banner")).to_be_hidden()
    page.clock.resume()
    _wait_for_turn(page)
    assert marks(page, "X") == 1 and marks(page, "O") == 1  # the move was kept
    page.screenshot(path=str(ARTIFACTS / "browser-recovered.png"), full_page=True)
