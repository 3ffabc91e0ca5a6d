"""The web app's resident memory under play, the figure its container limits rest on.

Clients play whole games against the champion through `/api/move` (the human side picks
a random legal move, the bot answers), and read `/api/model` and `/api/stats` between
games, as the browser UI does. The resident size of the web process (and any children)
is sampled throughout; the peak is what a memory limit must cover.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

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

    def as_dict(self) -> dict:
        return {
            "before_mib": round(self.before_mib, 1),
            "peak_mib": round(self.peak_mib, 1),
            "after_mib": round(self.after_mib, 1),
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "seconds": round(self.seconds, 1),
        }


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


def _play(web_url: str, game: str, level: int, rng: random.Random, tally: Counter, lock):
    """One game: random human moves, the bot's replies, until it ends."""
    moves: list[int] = []
    legal = None
    with requests.Session() as session:
        for path in (f"/api/model/{game}", f"/api/stats/{game}"):
            answer = session.get(web_url + path, timeout=30)
            with lock:
                tally[answer.status_code] += 1
        while True:
            if legal is not None:
                moves.append(rng.choice(legal))
            try:
                answer = session.post(
                    f"{web_url}/api/move",
                    json={"game": game, "moves": moves, "level": level},
                    timeout=60,
                )
            except requests.RequestException as error:
                with lock:
                    tally[type(error).__name__] += 1
                return
            with lock:
                tally[answer.status_code] += 1
            if answer.status_code != 200:
                return
            position = answer.json()["position"]
            if position["over"] or not position["legal_actions"]:
                return
            moves = position["moves"]
            legal = position["legal_actions"]


def web_memory_under_load(
    web_url: str,
    pid: int,
    games: list[str],
    *,
    clients: int = 16,
    seconds: float = 20.0,
    level: int = 64,
    seed: int = 0,
) -> MemoryUnderLoad:
    """Play `games` from `clients` threads for `seconds` against the web app at
    `web_url` (process `pid`), sampling its resident size every 0.1 s."""
    if clients < 1 or seconds <= 0 or not games:
        raise ValueError("need at least one client, one game and a positive duration")
    before = resident_mib(pid)
    peak = before
    tally: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while not stop.is_set():
            _play(web_url, rng.choice(games), level, rng, tally, lock)

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
        requests=sum(tally.values()),
        statuses=dict(tally),
        seconds=time.monotonic() - started,
    )
