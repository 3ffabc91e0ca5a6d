"""Run the benchmark suite through the CLI and print a Markdown table for docs/BENCHMARKS.md.

Usage: .venv/bin/python benchmarks/run.py   (or `make bench`)
Raw JSON lands in .cartridge/bench/.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path(".cartridge/bench")
CLI = shutil.which("cartridge", path=str(Path(sys.executable).parent)) or "cartridge"


def cartridge(*args: str) -> dict:
    result = subprocess.run([CLI, *args], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for game in ("tictactoe", "connect4", "othello"):
        report = cartridge("bench", "mcts", "--game", game, "--sims", "800", "--json")
        (OUT / f"mcts-{game}.json").write_text(json.dumps(report, indent=2))
        rows.append(
            f"| mcts | {game} | {report['sims_per_sec']:,} sims/s | "
            f"Python PUCT {report['python_puct_sims_per_sec']:,} sims/s | "
            f"{report['speedup_vs_python']}x |"
        )
    for game, shape, games in (
        ("tictactoe", [], "4096"),
        ("connect4", ["--blocks", "5", "--channels", "64"], "256"),
    ):
        model = OUT / f"{game}.onnx"
        subprocess.run(
            [CLI, "init-model", "--game", game, "--out", str(model), *shape],
            check=True,
            capture_output=True,
        )
        report = cartridge(
            "bench", "selfplay", "--game", game, "--model", str(model), "--games", games, "--json"
        )
        (OUT / f"selfplay-{game}.json").write_text(json.dumps(report, indent=2))
        rows.append(
            f"| selfplay | {game} | {report['selfplay_positions_per_sec']:,} pos/s | "
            f"raw onnxruntime {report['raw_onnxruntime_positions_per_sec']:,} pos/s | "
            f"{report['ratio']:.1%} |"
        )
    for game, shape in (("tictactoe", []), ("connect4", ["--blocks", "5", "--channels", "64"])):
        report = cartridge("bench", "train", "--game", game, *shape, "--json")
        (OUT / f"train-{game}.json").write_text(json.dumps(report, indent=2))
        rows.append(
            f"| train ({report['device']}) | {game} | {report['trainer_samples_per_sec']:,} "
            f"samples/s, {report['trainer_ms_per_step']} ms/step | bare loop "
            f"{report['bare_samples_per_sec']:,} samples/s | {report['ratio']:.1%} |"
        )
    print("| bench | game | result | baseline (same run) | ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
