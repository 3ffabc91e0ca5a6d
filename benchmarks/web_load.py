"""The web app under play: move latency (p50/p99), status codes and resident memory, the
figures behind docs/RELIABILITY.md's load rows and the web container's memory limits.

Usage: .venv/bin/python benchmarks/web_load.py [--clients 200] [--seconds 60]
       [--level 200] [--honour-retry-after] [--with-training] [--game G] [--json OUT]
Runs against the local stack that `cartridge stack up` started (its web app's PID from
`cartridge stack status`), on every game that has a champion. --with-training runs a
Connect 4 `cartridge train` on the same cores throughout and reports its steps per
second alone and under the load (from its MLflow metrics). Prints one JSON report.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cartridge.benchmarking.web_load import TrainingAlongside, web_under_load  # noqa: E402
from cartridge.stack import StackConfig, client_environment, status  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--level", type=int, default=64)
    parser.add_argument("--honour-retry-after", action="store_true")
    parser.add_argument("--with-training", action="store_true")
    parser.add_argument("--game", action="append", help="Only these games (repeatable).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = StackConfig.from_env()
    web = status(config)["web"]
    if web.pid is None or not web.healthy:
        sys.exit("the local stack's web app is not running: cartridge stack up")
    games = [
        game
        for game in args.game or ("tictactoe", "connect4", "othello")
        if requests.get(f"{web.url}/api/model/{game}", timeout=10).json().get("champion")
    ]
    if not games:
        sys.exit("no game has a champion to play against")
    report: dict = {
        "games": games,
        "clients": args.clients,
        "level": args.level,
        "honour_retry_after": args.honour_retry_after,
    }
    with (
        tempfile.TemporaryDirectory(prefix="cartridge-load-") as workdir,
        contextlib.ExitStack() as stack,
    ):
        training = None
        if args.with_training:
            training = stack.enter_context(
                TrainingAlongside(Path(workdir), client_environment(config))
            )
            alone_seconds = min(30.0, args.seconds / 2)
            first = training.step()
            time.sleep(alone_seconds)
            before = training.step()
            report["training_steps_per_second_alone"] = round((before - first) / alone_seconds, 2)
        result = web_under_load(
            web.url,
            web.pid,
            games,
            clients=args.clients,
            seconds=args.seconds,
            level=args.level,
            honour_retry_after=args.honour_retry_after,
        )
        if training is not None:
            report["training_steps_per_second_under_load"] = round(
                (training.step() - before) / result.seconds, 2
            )
    report.update(result.as_dict())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
