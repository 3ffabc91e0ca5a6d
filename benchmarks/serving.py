"""Serving path: /api/move under 32 concurrent clients, and Triton's dynamic batching.

Usage: .venv/bin/python benchmarks/serving.py [--home .cartridge-bench] [--clients 32]
       [--seconds 30] [--level 200] [--json OUT]
Starts its own local stack under --home (ports from CARTRIDGE_*_PORT or 9400/5400/8400/
8480), publishes a freshly initialised Connect 4 ResNet 5x64 (the default network) as
champion, then measures in one run:
  1. raw onnxruntime positions/s of that ONNX file in this process (2 threads);
  2. Triton gRPC calls of one position: one client in sequence, then 32 clients at once
     (what dynamic batching merges), and 32 clients sending 8 positions (the web search);
  3. `wrk` against POST /api/move with 32 connections at the default level, with the
     positions Triton evaluated meanwhile read from its metrics.
Needs `wrk` (Debian package). Prints one JSON report.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cartridge.evaluators.onnx_model import OnnxEvaluator  # noqa: E402
from cartridge.evaluators.triton_model import TritonEvaluator  # noqa: E402
from cartridge.games import load  # noqa: E402

GAME = "connect4"


def random_positions(game, count, seed=0, max_plies=20):
    """Move lists of random legal games, cut at a random ply, none finished."""
    rng = np.random.default_rng(seed)
    games = []
    while len(games) < count:
        state, moves = game.new_initial_state(), []
        for _ in range(int(rng.integers(0, max_plies))):
            action = int(rng.choice(state.legal_actions()))
            if state.apply(action).is_terminal():
                break
            state = state.apply(action)
            moves.append(action)
        games.append(moves)
    return games


def planes_of(game, move_lists):
    planes = []
    for moves in move_lists:
        state = game.new_initial_state()
        for action in moves:
            state = state.apply(action)
        planes.append(state.planes())
    return np.stack(planes)


def start_stack(home):
    os.environ["CARTRIDGE_HOME"] = home
    for name, port in (("S3", 9400), ("MLFLOW", 5400), ("TRITON", 8400), ("WEB", 8480)):
        os.environ.setdefault(f"CARTRIDGE_{name}_PORT", str(port))
    from cartridge.stack import StackConfig, client_environment, up

    config = StackConfig.from_env()
    up(config)
    os.environ.update(client_environment(config))
    return config


def publish_champion(game):
    """A freshly initialised default network, registered and promoted (Triton loads it)."""
    import mlflow
    import torch

    from cartridge.networks import build_network, export_onnx
    from cartridge.promotion import promote
    from cartridge.tracking import log_and_register, use_tracking

    client = use_tracking(os.environ["MLFLOW_TRACKING_URI"])
    torch.manual_seed(0)
    path = export_onnx(build_network(game), game, Path(tempfile.mkdtemp()) / "model.onnx")
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        _, version = log_and_register(client, path, game, {"purpose": "benchmark"})
    result = promote(client, game.name, version)
    if result.triton_error:
        raise RuntimeError(result.triton_error)
    return path, version


def raw_onnxruntime(game, path, planes, seconds=3.0):
    """Positions/s of in-process onnxruntime (2 threads) per batch size, median of runs."""
    evaluator = OnnxEvaluator(game, path, threads=2)
    report = {}
    for batch in (1, 8, 64, 256):
        chunk = planes[:batch]
        rates = []
        for _ in range(5):
            count, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds / 5:
                evaluator.evaluate(chunk)
                count += batch
            rates.append(count / (time.perf_counter() - began))
        report[batch] = round(statistics.median(rates))
    return report


def triton_clients(game, url, planes, clients, batch, seconds=6.0):
    """Positions/s and per-call latency with `clients` threads each calling in a loop."""
    evaluator = TritonEvaluator(game, url, protocol="grpc")
    evaluator.evaluate(planes[:batch])  # connect and warm up
    stop = time.perf_counter() + seconds
    latencies: list[float] = []
    lock = threading.Lock()

    def work(offset):
        mine = []
        chunk = planes[offset % (len(planes) - batch) :][:batch]
        while time.perf_counter() < stop:
            began = time.perf_counter()
            evaluator.evaluate(chunk)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i * 7,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    evaluator.close()
    return {
        "clients": clients,
        "batch": batch,
        "positions_per_sec": round(len(latencies) * batch / elapsed),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
    }


def triton_counts(metrics_url, model):
    """(positions inferred, model executions) so far, from Triton's Prometheus metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()

    def value(metric):
        pattern = rf'^{metric}{{[^}}]*model="{model}"[^}}]*}} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    return value("nv_inference_count"), value("nv_inference_exec_count")


def cpu_seconds(config):
    """CPU seconds used so far by the web app, Triton, and Triton's python-backend stubs."""
    import psutil

    from cartridge.stack.manager import _load_state

    state = _load_state(config)
    used = {}
    for name in ("web", "triton"):
        process = psutil.Process(state[name].pid)
        times = process.cpu_times()
        used[name] = times.user + times.system
        if name == "triton":
            stubs = process.children(recursive=True)
            used["triton_python_stubs"] = sum(
                c.cpu_times().user + c.cpu_times().system for c in stubs
            )
    return used


WRK_SCRIPT = """
local bodies = {%s}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/move", {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
"""


def api_move_load(config, game, clients, seconds, level):
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    bodies = [
        json.dumps({"game": GAME, "moves": moves, "level": level})
        for moves in random_positions(game, 256, seed=1)
    ]
    script = Path(tempfile.mkdtemp()) / "move.lua"
    script.write_text(WRK_SCRIPT % ", ".join(json.dumps(b) for b in bodies))
    # Warm every web worker thread's Triton connection before measuring.
    subprocess.run(
        [wrk, "-t2", f"-c{clients}", "-d3s", "-s", str(script), config.web_url],
        check=True,
        capture_output=True,
    )
    model = f"cartridge_{GAME}"
    before = triton_counts(config.triton_metrics_url, model)
    cpu_before = cpu_seconds(config)
    output = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{clients}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            config.web_url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    after = triton_counts(config.triton_metrics_url, model)
    cpu_after = cpu_seconds(config)
    positions = after[0] - before[0]
    executions = max(after[1] - before[1], 1)

    def latency(percent):
        found = re.search(rf"^\s+{percent}%\s+(\S+)$", output, re.MULTILINE)
        return _milliseconds(found.group(1)) if found else None

    requests_per_sec = float(re.search(r"Requests/sec:\s+(\S+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "clients": clients,
        "seconds": seconds,
        "level": level,
        "requests_per_sec": round(requests_per_sec, 2),
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "triton_positions_per_sec": round(positions / seconds),
        "triton_mean_batch": round(positions / executions, 1),
        "cores_used": {k: round((cpu_after[k] - cpu_before[k]) / seconds, 2) for k in cpu_after},
        "wrk_output": output,
    }


def _milliseconds(text):
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(number) * units[unit], 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=".cartridge-bench")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--level", type=int, default=200)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    game = load(GAME)
    config = start_stack(args.home)
    path, version = publish_champion(game)
    planes = planes_of(game, random_positions(game, 512))
    raw = raw_onnxruntime(game, path, planes)
    single = triton_clients(game, config.triton_grpc_url, planes, 1, 1)
    batched = triton_clients(game, config.triton_grpc_url, planes, args.clients, 1)
    search_like = triton_clients(game, config.triton_grpc_url, planes, args.clients, 8)
    load_test = api_move_load(config, game, args.clients, args.seconds, args.level)
    best_raw = max(raw.values())
    report = {
        "game": GAME,
        "model_version": version,
        "cpu_count": os.cpu_count(),
        "raw_onnxruntime_positions_per_sec": raw,
        "triton_batch1_sequential": single,
        "triton_batch1_concurrent": batched,
        "triton_batch8_concurrent": search_like,
        "dynamic_batching_gain": round(
            batched["positions_per_sec"] / single["positions_per_sec"], 2
        ),
        "api_move": {k: v for k, v in load_test.items() if k != "wrk_output"},
        "serving_vs_raw": round(load_test["triton_positions_per_sec"] / best_raw, 3),
    }
    print(load_test["wrk_output"], file=sys.stderr)
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
