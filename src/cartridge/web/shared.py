"""One read of MLflow per question at a time, shared by every request asking it.

The UI reads `/api/model` and `/api/stats` when a game starts, so a crowd arriving at
once asks MLflow the same question hundreds of times: measured with 200 clients, the
worker threads all waited on MLflow and the reads timed out after 30 s. Requests that
arrive while an answer is being fetched wait for that fetch (up to a deadline) instead
of starting their own; an answer is then reused for `fresh_seconds` (0: not at all).
No lock is held while fetching.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


class SharedAnswers(Generic[Answer]):
    def __init__(self, fresh_seconds: float = 0.0, wait_seconds: float = 30.0):
        self.fresh_seconds = fresh_seconds
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._answers: dict[Hashable, tuple[float, Answer]] = {}
        self._pending: dict[Hashable, Future] = {}

    def get(self, key: Hashable, fetch: Callable[[], Answer]) -> Answer:
        """`fetch()`'s answer for `key`: a fresh stored one, the one being fetched now,
        or a new fetch. A failed fetch fails every request that waited on it."""
        with self._lock:
            stored = self._answers.get(key)
            if stored is not None and time.monotonic() - stored[0] < self.fresh_seconds:
                return stored[1]
            future = self._pending.get(key)
            owner = future is None
            if owner:
                future = self._pending[key] = Future()
        if not owner:
            return future.result(timeout=self.wait_seconds)
        try:
            answer = fetch()
        except BaseException as error:
            future.set_exception(error)
            raise
        else:
            future.set_result(answer)
            with self._lock:
                self._answers[key] = (time.monotonic(), answer)
            return answer
        finally:
            with self._lock:
                self._pending.pop(key, None)
