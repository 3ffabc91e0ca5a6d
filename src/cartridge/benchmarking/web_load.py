"""The web app under play: latency, status codes and resident memory.

Clients play whole games against the champion through `/api/move` (the human side picks
a random legal move, the bot answers), and read `/api/model` and `/api/stats` between
games, as the browser UI does. Every move's status and latency is kept; the resident
size of the web process (and any children) is sampled throughout, and its peak is what
a memory limit must cover.

A 503 (the web app shedding load past its bounded queue, or Triton away) ends the game,
as an impatient client would; with `honour_retry_after` the client waits the
`Retry-After` seconds and sends the same move again, as the browser UI does.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

MIB = 2**20


@dataclass
class MemoryUnderLoad:
    before_mib: float
    peak_mib: float
    after_mib: float
    requests: int
    statuses: dict[int | str, int] = field(default_factory=dict)
    seconds: float = 0.0
    move_seconds: list[float] = field(default_factory=list)  # answered 200
    shed_seconds: list[float] = field(default_factory=list)  # answered 503

    def as_dict(self) -> dict:
        return {
            "moves_ok": len(self.move_seconds),
            "moves_per_second": round(len(self.move_seconds) / max(self.seconds, 1e-9), 1),
            "move_p50_ms": _percentile_ms(self.move_seconds, 50),
            "move_p99_ms": _percentile_ms(self.move_seconds, 99),
            "move_max_ms": _percentile_ms(self.move_seconds, 100),
            "shed_p50_ms": _percentile_ms(self.shed_seconds, 50),
            "before_mib": round(self.before_mib, 1),
            "peak_mib": round(self.peak_mib, 1),
            "after_mib": round(self.after_mib, 1),
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "seconds": round(self.seconds, 1),
        }


def _percentile_ms(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    if percent == 100:
        return round(max(values) * 1000, 1)
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values
    return round(cuts[min(percent, len(cuts)) - 1] * 1000, 1)


def resident_mib(pid: int) -> float:
    """Resident size of a process and its children, in MiB."""
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / MIB


@dataclass
class _Tally:
    statuses: Counter = field(default_factory=Counter)
    ok: list[float] = field(default_factory=list)
    shed: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _play(
    web_url: str,
    game: str,
    level: int,
    rng: random.Random,
    tally: _Tally,
    stop: threading.Event,
    honour_retry_after: bool,
):
    """One game: random human moves, the bot's replies, until it ends."""
    moves: list[int] = []
    legal = None
    with requests.Session() as session:
        for path in (f"/api/model/{game}", f"/api/stats/{game}"):
            try:
                answer = session.get(web_url + path, timeout=30)
            except requests.RequestException as error:
                with tally.lock:
                    tally.statuses[type(error).__name__] += 1
                return
            with tally.lock:
                tally.statuses[answer.status_code] += 1
        while not stop.is_set():
            if legal is not None:
                moves.append(rng.choice(legal))
                legal = None
            sent = time.monotonic()
            try:
                answer = session.post(
                    f"{web_url}/api/move",
                    json={"game": game, "moves": moves, "level": level},
                    timeout=60,
                )
            except requests.RequestException as error:
                with tally.lock:
                    tally.statuses[type(error).__name__] += 1
                return
            took = time.monotonic() - sent
            with tally.lock:
                tally.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    tally.ok.append(took)
                elif answer.status_code == 503:
                    tally.shed.append(took)
            if answer.status_code == 503 and honour_retry_after:
                stop.wait(float(answer.headers.get("Retry-After", "1")))
                continue  # the same move again
            if answer.status_code != 200:
                return
            position = answer.json()["position"]
            if position["over"] or not position["legal_actions"]:
                return
            moves = position["moves"]
            legal = position["legal_actions"]


def web_under_load(
    web_url: str,
    pid: int,
    games: list[str],
    *,
    clients: int = 16,
    seconds: float = 20.0,
    level: int = 64,
    seed: int = 0,
    honour_retry_after: bool = False,
) -> MemoryUnderLoad:
    """Play `games` from `clients` threads for `seconds` against the web app at
    `web_url` (process `pid`), sampling its resident size every 0.1 s."""
    if clients < 1 or seconds <= 0 or not games:
        raise ValueError("need at least one client, one game and a positive duration")
    before = resident_mib(pid)
    peak = before
    tally = _Tally()
    stop = threading.Event()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while not stop.is_set():
            _play(web_url, rng.choice(games), level, rng, tally, stop, honour_retry_after)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while time.monotonic() - started < seconds:
        peak = max(peak, resident_mib(pid))
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    after = resident_mib(pid)
    return MemoryUnderLoad(
        before_mib=before,
        peak_mib=max(peak, after),
        after_mib=after,
        requests=sum(tally.statuses.values()),
        statuses=dict(tally.statuses),
        seconds=time.monotonic() - started,
        move_seconds=tally.ok,
        shed_seconds=tally.shed,
    )


class TrainingAlongside:
    """A long Connect 4 `cartridge train` in its own process on a fresh shard, for load
    that must share the cores with training; `step()` is how far it got (from its MLflow
    metrics). Used as a context manager: started (and logging) on entry, killed on exit.
    `environment` names the MLflow and S3 the commands use."""

    def __init__(self, workdir: Path, environment: dict[str, str], start_seconds: float = 120):
        self.workdir = workdir
        self.environment = {**os.environ, **environment}
        self.start_seconds = start_seconds
        self.process: subprocess.Popen | None = None
        self.run_id = ""

    def __enter__(self) -> TrainingAlongside:
        from cartridge.tracking import use_tracking

        cli = [sys.executable, "-m", "cartridge"]
        shard = self.workdir / "shard"
        subprocess.run(
            [*cli, "selfplay", "--game", "connect4", "--games", "32", "--sims", "16",
             "--out", str(shard), "--quiet"],
            env=self.environment, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        self.client = use_tracking(self.environment["MLFLOW_TRACKING_URI"])
        since = int(time.time() * 1000)
        self.process = subprocess.Popen(
            [*cli, "train", "--game", "connect4", "--shard", str(shard), "--steps", "1000000",
             "--checkpoint-dir", str(self.workdir / "checkpoints"), "--no-register", "--quiet",
             "--log-every", "1"],
            env=self.environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            experiment = self.client.get_experiment_by_name("cartridge-connect4")
            runs = (
                self.client.search_runs(
                    [experiment.experiment_id],
                    f"attributes.start_time >= {since}",
                    max_results=1,
                )
                if experiment
                else []
            )
            if runs:
                self.run_id = runs[0].info.run_id
                if self.step() > 0:
                    return self
            time.sleep(1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the training run did not log a step within {self.start_seconds} s")

    def step(self) -> int:
        history = self.client.get_metric_history(self.run_id, "loss")
        return max((m.step for m in history), default=0)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
