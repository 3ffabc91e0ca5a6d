import pytest

from cartridge.schedule import CronError, check_cron
from cartridge.seeds import derive_seed


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 */6 * * *",
        "30 15 2 1-31/2 JAN-jun ?",
        "0 0 0 * * MON,WED,FRI",
        "0 */5 9-17 * * 1-5",
        "  0 0 3 * * *  ",
        "@daily",
        "@every 6h30m",
        "@every 90s",
    ],
)
def test_kfp_cron_expressions_are_accepted(expression):
    assert check_cron(expression) == " ".join(expression.split())


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 */6 * * *", "five fields"),
        ("* * * *", "4 fields"),
        ("0 0 0 1 1 * 2030", "7 fields"),
        ("", "empty"),
        ("60 * * * * *", "60 is outside 0-59"),
        ("0 0 24 * * *", "24 is outside 0-23"),
        ("0 0 0 0 * *", "0 is outside 1-31"),
        ("0 0 0 * 13 *", "13 is outside 1-12"),
        ("0 0 0 * * 7", "7 is outside 0-6"),
        ("0 0 0 * FOO *", "'FOO' is not a number"),
        ("0 0 */0 * * *", "positive number"),
        ("0 0 5-2 * * *", "backwards"),
        ("? 0 0 * * *", "only stands for a day"),
        ("@fortnightly", "unknown schedule"),
        ("@every soon", "bad duration"),
    ],
)
def test_bad_or_misleading_cron_expressions_are_refused(expression, reason):
    with pytest.raises(CronError, match=reason):
        check_cron(expression)


def test_seeds_differ_by_run_and_repeat_without_one():
    first = derive_seed(7, "run-a", "selfplay", 1, 0)
    assert first == derive_seed(7, "run-a", "selfplay", 1, 0)
    assert 0 <= first < 2**63
    others = {
        derive_seed(7, "run-b", "selfplay", 1, 0),  # another run
        derive_seed(8, "run-a", "selfplay", 1, 0),  # another seed
        derive_seed(7, "run-a", "selfplay", 2, 0),  # another iteration
        derive_seed(7, "run-a", "selfplay", 1, 1),  # another shard
        derive_seed(7, "run-a", "train", 1, 0),  # another purpose
        derive_seed(7, "", "selfplay", 1, 0),  # no run: reproducible from the seed
    }
    assert first not in others and len(others) == 6
    # Arithmetic seeds collided: shard 100 of iteration 1 was shard 0 of iteration 2.
    assert derive_seed(0, "", "selfplay", 1, 100) != derive_seed(0, "", "selfplay", 2, 0)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            derive_seed(bad, "", "selfplay")
