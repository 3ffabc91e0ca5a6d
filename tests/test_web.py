"""The web API, served by the session stack's real web app in front of its real Triton
and MLflow."""

import json
import os
import signal
import threading
import time

import psutil
import pytest
import requests
from conftest import fresh_served_model
from mlflow.entities import Metric

from cartridge.arena.stats import summarize
from cartridge.promotion import record_arena
from cartridge.stack import up
from cartridge.stack.manager import _load_state, _stop
from cartridge.tracking import ensure_experiment, use_tracking


@pytest.fixture(scope="module")
def web(local_stack, served_champions):
    return local_stack.web_url


def move(web, body, **kwargs):
    return requests.post(f"{web}/api/move", json=body, timeout=30, **kwargs)


def test_health_readiness_and_docs(web):
    assert requests.get(f"{web}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{web}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["triton"] and ready.json()["mlflow"]
    assert requests.get(f"{web}/docs", timeout=5).status_code == 200
    paths = requests.get(f"{web}/openapi.json", timeout=5).json()["paths"]
    assert {"/api/move", "/api/state", "/api/model/{game}", "/api/stats/{game}"} <= set(paths)
    page = requests.get(f"{web}/", timeout=5)
    assert page.status_code == 200 and "Cartridge" in page.text


def test_games_describe_boards_and_actions(web):
    games = requests.get(f"{web}/api/games", timeout=5).json()["games"]
    assert [g["name"] for g in games] == ["tictactoe", "connect4", "othello"]
    connect4 = requests.get(f"{web}/api/games/connect4", timeout=5).json()
    assert (connect4["rows"], connect4["cols"], connect4["num_actions"]) == (6, 7, 7)
    assert connect4["drop_columns"] and connect4["default_level"] in connect4["levels"]
    unknown = requests.get(f"{web}/api/games/chess", timeout=5)
    assert unknown.status_code == 404 and "chess" in unknown.json()["detail"]


def test_move_replies_with_the_served_champion(web, served_champions):
    reply = move(web, {"game": "connect4", "moves": [3, 3], "level": 64})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["bot_move"] in range(7) and body["model_version"] == served_champions["connect4"]
    assert abs(sum(body["policy"]) - 1) < 1e-5 and len(body["policy"]) == 7
    assert body["position"]["moves"] == [3, 3, body["bot_move"]]
    assert body["position"]["to_play"] == 1 and not body["position"]["over"]
    state = requests.post(
        f"{web}/api/state", json={"game": "connect4", "moves": body["position"]["moves"]}, timeout=5
    ).json()
    assert state["board"] == body["position"]["board"]
    finished = move(web, {"game": "tictactoe", "moves": [0, 3, 1, 4, 2]}).json()
    assert finished["bot_move"] is None and finished["position"]["result"] == "first_player_won"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"game": "tictactoe", "moves": [4, 4]}, 400, "move 2 (4) is illegal"),
        ({"game": "tictactoe", "moves": [0, 3, 1, 4, 2, 5]}, 400, "after the end"),
        ({"game": "connect4", "moves": [3] * 7}, 400, "illegal"),
        ({"game": "chess", "moves": []}, 422, "game: Input should be"),
        ({"game": "tictactoe", "moves": ["a"]}, 422, "moves.0"),
        ({"game": "tictactoe", "moves": [1.5]}, 422, "moves.0"),
        ({"game": "tictactoe", "moves": [-1]}, 422, "greater than or equal to 0"),
        ({"game": "tictactoe", "moves": [0] * 200}, 422, "at most 128"),
        ({"game": "tictactoe", "moves": [], "level": 0}, 422, "level"),
        ({"game": "tictactoe", "moves": [], "level": 10**6}, 422, "level"),
        ({"game": "tictactoe", "moves": [], "colour": "red"}, 422, "colour"),
        ({"moves": []}, 422, "game: Field required"),
        ([1, 2], 422, "valid dictionary"),
    ],
)
def test_bad_moves_get_4xx_with_a_reason(web, body, status, reason):
    reply = move(web, body)
    assert reply.status_code == status, reply.text
    assert reason in reply.json()["detail"]


def test_malformed_and_oversized_bodies(web):
    broken = requests.post(
        f"{web}/api/move",
        data='{"game": "tictactoe",',
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    padding = " " * 20_000
    large = requests.post(
        f"{web}/api/move",
        data='{"game": "tictactoe", "moves": []' + padding + "}",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert large.status_code == 413 and "larger than" in large.json()["detail"]

    def chunks():  # no Content-Length: the limit must still hold
        yield b'{"game": "tictactoe", "moves": []'
        for _ in range(40):
            yield b" " * 1000
        yield b"}"

    streamed = requests.post(
        f"{web}/api/move", data=chunks(), headers={"Content-Type": "application/json"}, timeout=5
    )
    assert streamed.status_code == 413


def test_a_game_without_champion_is_reported_as_such(web, stack_env):
    fresh_served_model(use_tracking(stack_env.mlflow_url), stack_env, "othello")
    reply = move(web, {"game": "othello", "moves": []})
    assert reply.status_code == 409 and "no champion yet" in reply.json()["detail"], reply.text
    lineage = requests.get(f"{web}/api/model/othello", timeout=10)
    assert lineage.status_code == 200 and lineage.json() == {"game": "othello", "champion": None}


def test_lineage_and_stats_come_from_mlflow(web, local_stack, served_champions):
    client = use_tracking(local_stack.mlflow_url)
    version = served_champions["tictactoe"]
    match = summarize("challenger", "random", "tictactoe", 18, 2, 0)
    record_arena(client, "tictactoe", version, match, None)
    run = client.create_run(ensure_experiment(client, "tictactoe"), tags={"game": "tictactoe"})
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("loss", 2.0 - step / 10, now, step) for step in range(1, 6)],
    )
    client.set_terminated(run.info.run_id)

    lineage = requests.get(f"{web}/api/model/tictactoe", timeout=10).json()["champion"]
    assert lineage["version"] == version and lineage["promoted_at"]
    assert lineage["arena"]["wins"] == 18 and lineage["arena"]["opponent"] == "random"
    assert lineage["run_url"].startswith(local_stack.mlflow_url)
    assert lineage["triton"] == {
        "model": "cartridge_tictactoe",
        "version": version,
        "state": "READY",
    }
    stats = requests.get(f"{web}/api/stats/tictactoe", timeout=10).json()
    losses = [value for _, value in stats["training"]["loss"]]
    assert losses[-5:] == pytest.approx([1.9, 1.8, 1.7, 1.6, 1.5])
    steps = [step for step, _ in stats["training"]["loss"]]
    assert steps == sorted(steps)
    assert any(a["version"] == version and a["champion"] for a in stats["arena"])
    # The version's rating over every stored arena game: 18 of 20 against random.
    rating = next(r for r in stats["ratings"] if r["version"] == version)
    assert rating["low"] < rating["elo"] < rating["high"] and rating["elo"] > 200
    assert requests.get(f"{web}/api/stats/go", timeout=5).status_code == 422


def test_metrics_count_requests_and_triton_calls(web):
    move(web, {"game": "tictactoe", "moves": [4], "level": 16})
    # A labelled counter has no line until first used: this test makes its own bad request.
    assert move(web, {"game": "tictactoe", "moves": [4, 4]}).status_code == 400
    text = requests.get(f"{web}/metrics", timeout=5).text
    assert 'cartridge_http_requests_total{method="POST",route="/api/move",status="200"}' in text
    assert 'cartridge_triton_request_duration_seconds_count{game="tictactoe"}' in text
    assert 'cartridge_errors_total{kind="bad_request"}' in text


def test_triton_stopped_mid_game_gives_503_then_the_game_goes_on(web, local_stack):
    first = move(web, {"game": "tictactoe", "moves": [4], "level": 32})
    assert first.status_code == 200
    moves = first.json()["position"]["moves"]
    moves.append(next(a for a in first.json()["position"]["legal_actions"]))
    _stop("triton", _load_state(local_stack)["triton"])
    try:
        started = time.monotonic()
        down = move(web, {"game": "tictactoe", "moves": moves, "level": 32})
        assert time.monotonic() - started < 10
        assert down.status_code == 503 and "Triton is not reachable" in down.json()["detail"]
        assert down.headers["Retry-After"] == "5"
        not_ready = requests.get(f"{web}/readyz", timeout=10)
        assert not_ready.status_code == 503 and not not_ready.json()["triton"]
    finally:
        up(local_stack)  # restarts Triton, which loads the published champions again
    again = move(web, {"game": "tictactoe", "moves": moves, "level": 32})
    assert again.status_code == 200, again.text
    assert again.json()["position"]["moves"][: len(moves)] == moves


def test_triton_killed_under_load_heals_without_restarting_the_web_app(web, local_stack):
    """Triton SIGKILLed while ten clients play: `/healthz` answers throughout, moves get
    503 with Retry-After while it is down, and 200 again within 10 s of its return."""
    record = _load_state(local_stack)["triton"]
    stop = threading.Event()
    lock = threading.Lock()
    replies: list[tuple[float, float, int | None, str, str | None]] = []
    health_failures: list[str] = []

    def play():
        while not stop.is_set():
            sent = time.monotonic()
            try:
                reply = move(web, {"game": "tictactoe", "moves": [4], "level": 16})
                entry = (sent, time.monotonic(), reply.status_code, reply.text,
                         reply.headers.get("Retry-After"))  # fmt: skip
            except requests.RequestException as error:
                entry = (sent, time.monotonic(), None, str(error), None)
            with lock:
                replies.append(entry)

    def health():
        while not stop.is_set():
            try:
                answer = requests.get(f"{web}/healthz", timeout=2)
                if answer.status_code != 200:
                    health_failures.append(f"status {answer.status_code}")
            except requests.RequestException as error:
                health_failures.append(str(error))
            time.sleep(0.2)

    threads = [threading.Thread(target=play, daemon=True) for _ in range(10)]
    threads.append(threading.Thread(target=health, daemon=True))
    for thread in threads:
        thread.start()
    recovered = None
    try:
        time.sleep(3)
        members = [psutil.Process(record.pid), *psutil.Process(record.pid).children(True)]
        os.killpg(record.pid, signal.SIGKILL)
        psutil.wait_procs(members, timeout=10)
        killed = time.monotonic()
        time.sleep(10)  # the old shared client hung 5-8 s after the kill
        restarting = time.monotonic()
        up(local_stack)  # Triton comes back; the web app is not touched
        back = time.monotonic()
        while time.monotonic() < back + 15 and recovered is None:
            with lock:
                recovered = min(
                    (r[1] for r in replies if r[0] >= back and r[2] == 200), default=None
                )
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not health_failures, health_failures[:5]
    assert recovered is not None and recovered - back < 10, "moves did not recover"
    # Sent after the calls in flight at the kill had ended, before Triton was restarted.
    outage = [r for r in replies if killed + 6 <= r[0] < restarting]
    assert outage and all(r[2] == 503 for r in outage), {r[2] for r in outage}
    bad = [r for r in outage if r[4] != "5" or "0x" in r[3]]
    assert not bad, bad[:3]
    assert {r[2] for r in replies} <= {200, 503}, [r[3] for r in replies if r[2] not in (200, 503)]
    ready = requests.get(f"{web}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["triton"]


def test_control_calls_have_deadlines_and_share_no_lock(tmp_path):
    """A Triton that accepts connections and never answers (a hung server): every
    control call returns within its deadline, and a caller waiting on it does not hold
    up another game's caller."""
    import socket

    from cartridge.serving.triton import ServedDiscounts, TritonControl, TritonUnavailable

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        control = TritonControl(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.0,
                                load_timeout=2.0)  # fmt: skip
        try:
            started = time.monotonic()
            assert control.ready() is False
            with pytest.raises(TritonUnavailable, match="not reachable"):
                control.load("tictactoe")
            assert time.monotonic() - started < 6
            discounts = ServedDiscounts(control)
            errors = []

            def ask(game):
                try:
                    discounts.get(game)
                except TritonUnavailable as error:
                    errors.append(str(error))

            asking = [threading.Thread(target=ask, args=(g,)) for g in ("tictactoe", "connect4")]
            started = time.monotonic()
            for thread in asking:
                thread.start()
            for thread in asking:
                thread.join(timeout=10)
            # In parallel, about one timeout; one after the other (a lock held across
            # the call), two.
            assert time.monotonic() - started < 1.8 and len(errors) == 2
            assert not any("0x" in error for error in errors)
        finally:
            control.close()


class _ServedCopy:
    """A second copy of the web app under uvicorn in this process, on the session's
    Triton and MLflow, with its own settings."""

    def __init__(self, local_stack, **settings):
        import socket

        import uvicorn

        from cartridge.web.app import WebSettings, create_app

        config = WebSettings(
            triton_url=local_stack.triton_url,
            triton_grpc_url=local_stack.triton_grpc_url,
            tracking_uri=local_stack.mlflow_url,
            reconcile_seconds=0,
            **settings,
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
        )

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the app copy did not start"
        return self

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def test_shutdown_stops_the_batching_threads(local_stack, served_champions):
    # Stopping the server runs FastAPI's shutdown, which must let each batcher finish
    # and stop its threads.
    def dispatchers():
        return [t for t in threading.enumerate() if t.name.startswith("batching-evaluator")]

    before = len(dispatchers())
    copy = _ServedCopy(local_stack)
    with copy:
        reply = move(copy.url, {"game": "connect4", "moves": [3], "level": 16})
        assert reply.status_code == 200, reply.text
        assert len(dispatchers()) > before
    assert not copy.thread.is_alive() and len(dispatchers()) == before


def test_past_the_pending_bound_moves_are_shed_with_retry_after(local_stack, served_champions):
    """Admission control: with room for two moves at once, a burst of 24 gets 200s and
    quick 503s with Retry-After, nothing else, and the app serves normally afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"game": "connect4", "moves": [3], "level": 800}
    with _ServedCopy(local_stack, max_pending_moves=2) as copy:
        with ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(lambda _: move(copy.url, body), range(24)))
        statuses = [r.status_code for r in replies]
        assert set(statuses) == {200, 503}, statuses
        shed = [r for r in replies if r.status_code == 503]
        assert all(r.headers["Retry-After"] == "1" for r in shed)
        assert all(r.json()["detail"].startswith("busy:") for r in shed)
        assert statuses.count(200) >= 2
        metrics = requests.get(f"{copy.url}/metrics", timeout=10).text
        assert f'cartridge_errors_total{{kind="overloaded"}} {float(len(shed))}' in metrics
        assert "cartridge_pending_moves 0.0" in metrics
        assert move(copy.url, body).status_code == 200


def test_web_memory_under_play_fits_every_overlays_limits(web, local_stack, served_champions):
    """The web container's memory request and limit in each rendered overlay cover the
    resident size measured here while 16 clients play whole games (the local web app
    also runs the reconciler, so this is an upper bound for a cluster web pod)."""
    from pathlib import Path

    from cartridge.benchmarking.web_load import web_under_load
    from cartridge.deploy.contract import Render, memory_problems

    renders = sorted((Path(__file__).parents[1] / "build" / "validate" / "rendered").glob("*"))
    assert len(renders) == 3, "no overlay renders: run `make validate` (part of `make test`)"
    pid = _load_state(local_stack)["web"].pid
    measured = web_under_load(web, pid, sorted(served_champions), clients=16, seconds=15, level=32)
    assert measured.requests > 100 and set(measured.statuses) == {200}, measured.as_dict()
    for path in renders:
        assert memory_problems(Render(path), "web", "web", measured.peak_mib) == []
    # The check bites: a limit at the measured size without headroom is refused.
    [problem] = memory_problems(_with_web_memory(renders[0], "256Mi"), "web", "web", 250)
    assert "memory limit 256Mi is under 1.5x the 250 MiB" in problem


def _with_web_memory(path, limit):
    from cartridge.deploy.contract import Render

    render = Render(path)
    for workload in render.of_kind("Deployment"):
        if workload["metadata"]["name"] == "web":
            resources = workload["spec"]["template"]["spec"]["containers"][0]["resources"]
            resources["limits"]["memory"] = limit
    return render


def test_error_answers_are_the_ones_the_openapi_spec_documents(web):
    """Each way a request can be refused answers a status the route's OpenAPI entry
    lists, with a body of the model it names: clients generated from the spec (and
    schema-based fuzzers) get what they were promised."""
    from cartridge.web.app import ErrorReply, InvalidRequestReply

    spec = requests.get(f"{web}/openapi.json", timeout=30).json()
    models = {"ErrorReply": ErrorReply, "InvalidRequestReply": InvalidRequestReply}
    json_header = {"content-type": "application/json"}
    cases = [
        ("post", "/api/move", {"json": {"game": "chess", "moves": []}}, 422),
        ("post", "/api/move", {"json": {"game": "tictactoe", "moves": [4, 4]}}, 400),
        ("post", "/api/move", {"json": {"game": "tictactoe", "level": 0}}, 422),
        ("post", "/api/move", {"data": b'{"game": "tictactoe"', "headers": json_header}, 422),
        ("post", "/api/move", {"data": b"\xff\xfe{}", "headers": json_header}, 422),
        ("post", "/api/move", {"data": b"[" * 10_000, "headers": json_header}, 422),
        ("post", "/api/move", {"data": b"[" * 40_000, "headers": json_header}, 413),
        ("post", "/api/state", {"json": {"game": "tictactoe", "moves": [9]}}, 400),
        ("get", "/api/games/{game}", {"path": "/api/games/chess"}, 404),
        ("get", "/api/model/{game}", {"path": "/api/model/chess"}, 422),
        ("get", "/api/stats/{game}", {"path": "/api/stats/chess"}, 422),
        ("post", "/api/webhooks/mlflow", {"data": b"{}", "headers": json_header}, 401),
    ]
    for method, route, request, expected in cases:
        path = request.pop("path", route)
        answer = requests.request(method, f"{web}{path}", timeout=30, **request)
        assert answer.status_code == expected, (route, request, answer.text)
        documented = spec["paths"][route][method]["responses"]
        assert str(expected) in documented, (route, expected, sorted(documented))
        schema = documented[str(expected)]["content"]["application/json"]["schema"]
        models[schema["$ref"].rsplit("/", 1)[-1]].model_validate(answer.json())
    assert "HTTPValidationError" not in json.dumps(spec["paths"])


def test_concurrent_reads_share_one_fetch_and_its_failure():
    """A crowd asking the same question makes one MLflow read; a failed read fails its
    waiters and the next request reads again; an answer is reused only while fresh."""
    from concurrent.futures import ThreadPoolExecutor

    from cartridge.web.shared import SharedAnswers

    calls = []

    def slow_fetch():
        calls.append(1)
        time.sleep(0.5)
        return {"version": len(calls)}

    shared = SharedAnswers()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: shared.get("tictactoe", slow_fetch), range(50)))
    assert len(calls) == 1 and all(a == {"version": 1} for a in answers)
    assert shared.get("tictactoe", slow_fetch) == {"version": 2}  # not fresh-cached: read again

    def failing_fetch():
        calls.append(1)
        time.sleep(0.5)
        raise OSError("MLflow is down")

    calls.clear()
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(
            pool.map(lambda _: _outcome(lambda: shared.get("connect4", failing_fetch)), range(20))
        )
    assert len(calls) == 1 and outcomes == ["MLflow is down"] * 20
    assert shared.get("connect4", slow_fetch) == {"version": 2}

    cached = SharedAnswers(fresh_seconds=60)
    assert cached.get("othello", slow_fetch) == cached.get("othello", slow_fetch)


def _outcome(call):
    try:
        return call()
    except OSError as error:
        return str(error)


@pytest.mark.timeout(420)
def test_two_hundred_clients_get_moves_or_retry_after_and_nothing_else(
    web, local_stack, served_champions, tmp_path
):
    """The load the web app is sized for, bounded: 200 clients playing whole games for
    20 s (each reads the lineage and stats first, as the UI does, and waits Retry-After
    when shed). Every answer is a 200 or a deliberate 503 (a timed-out read counts as
    its error's name), moves keep being served, and memory does not grow with the load.
    A Connect 4 training run shares the two cores throughout, and neither starves.
    (The session's registry is small, so its reads are cheap: the crowd of reads that
    timed out against a long-lived registry is guarded by the shared-fetch test.)"""
    from cartridge.benchmarking.web_load import TrainingAlongside, web_under_load
    from cartridge.stack import client_environment

    pid = _load_state(local_stack)["web"].pid
    with TrainingAlongside(tmp_path, client_environment(local_stack)) as training:
        started = training.step()
        measured = web_under_load(
            web, pid, ["tictactoe"], clients=200, seconds=20, level=200, honour_retry_after=True
        )
        trained = training.step() - started
    report = {**measured.as_dict(), "training_steps": trained}
    assert trained > 0, report
    assert set(measured.statuses) <= {200, 503}, report
    assert len(measured.move_seconds) >= 200, report
    assert measured.after_mib < measured.before_mib * 1.5, report
