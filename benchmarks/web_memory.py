"""The web app's resident memory while people play: the figure behind the web
container's memory request and limit in kustomize/ (docs/DEPLOY.md).

Usage: .venv/bin/python benchmarks/web_memory.py [--clients 16] [--seconds 60]
       [--level 64] [--json OUT]
Runs against the local stack that `cartridge stack up` started (its web app's PID from
`cartridge stack status`), on every game that has a champion. Prints one JSON report.
"""

import argparse
import json
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cartridge.benchmarking.web_memory import web_memory_under_load  # noqa: E402
from cartridge.stack import StackConfig, status  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--level", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    web = status(StackConfig.from_env())["web"]
    if web.pid is None or not web.healthy:
        sys.exit("the local stack's web app is not running: cartridge stack up")
    games = [
        game
        for game in ("tictactoe", "connect4", "othello")
        if requests.get(f"{web.url}/api/model/{game}", timeout=10).json().get("champion")
    ]
    if not games:
        sys.exit("no game has a champion to play against")
    result = web_memory_under_load(
        web.url, web.pid, games, clients=args.clients, seconds=args.seconds, level=args.level
    )
    report = {"games": games, "clients": args.clients, "level": args.level, **result.as_dict()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
