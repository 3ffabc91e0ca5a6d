"""Evaluator that merges the leaf batches of concurrent searches into fewer, larger calls.

A web replica runs one search per request, each sending ~16 positions per call. Sent
one by one, every call pays the client's RPC cost and the server's request handling
on the same cores that evaluate the network. Here callers enqueue their positions and
a few dispatcher threads send whatever has queued up as one call, so the replica makes
tens of large calls per second instead of a thousand small ones. Triton's dynamic
batching still merges the calls of several replicas on the server.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from cartridge.evaluators.base import Evaluator, check_planes


class _Pending:
    __slots__ = ("planes", "future")

    def __init__(self, planes: np.ndarray):
        self.planes = planes
        self.future: Future = Future()


class BatchingEvaluator:
    """Thread-safe `evaluate` that batches concurrent callers onto `inner`.

    `dispatchers` calls may be in flight at once, so the searches answered by one call
    pick their next leaves while another call is being evaluated. A dispatcher takes
    what is queued without waiting for more (no added latency when idle), up to
    `max_batch` positions. Errors of a call are raised in every caller it served.
    `last_version` is the inner evaluator's model version for this thread's latest call.
    A caller waits at most `deadline` seconds (queue and call together), then gets a
    TimeoutError.
    """

    def __init__(
        self,
        inner: Evaluator,
        max_batch: int = 1024,
        dispatchers: int = 3,
        deadline: float = 60.0,
    ):
        if max_batch < 1 or dispatchers < 1:
            raise ValueError("max_batch and dispatchers must be at least 1")
        if deadline <= 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        self.inner = inner
        self.max_batch = max_batch
        self.deadline = deadline
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._local = threading.local()
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"batching-evaluator-{i}", daemon=True)
            for i in range(dispatchers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def last_version(self) -> str | None:
        return getattr(self._local, "version", None)

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Checked here, so one caller's bad input cannot fail the callers batched with it.
        game = getattr(self.inner, "game", None)
        if game is not None:
            planes = check_planes(planes, game.planes_shape)
        pending = _Pending(np.ascontiguousarray(planes, dtype=np.float32))
        self._queue.put(pending)
        try:
            logits, values, version = pending.future.result(timeout=self.deadline)
        except FutureTimeout:
            # The call may still finish; its result then goes to a future nobody reads.
            raise TimeoutError(f"no evaluation within {self.deadline:g} s") from None
        self._local.version = version
        return logits, values

    def _dispatch(self) -> None:
        carried: _Pending | None = None  # did not fit the previous call
        while True:
            first = carried or self._queue.get()
            carried = None
            if first is None:
                return
            batch, size = [first], len(first.planes)
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # closing: let the other dispatchers see it too
                    self._queue.put(None)
                    break
                if size + len(item.planes) > self.max_batch:
                    carried = item
                    break
                batch.append(item)
                size += len(item.planes)
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            planes = (
                batch[0].planes
                if len(batch) == 1
                else np.concatenate([item.planes for item in batch])
            )
            logits, values = self.inner.evaluate(planes)
            version = getattr(self.inner, "last_version", None)
        except BaseException as error:  # every caller of this call gets the failure
            for item in batch:
                item.future.set_exception(error)
            return
        start = 0
        for item in batch:
            end = start + len(item.planes)
            item.future.set_result((logits[start:end], values[start:end], version))
            start = end

    def close(self) -> None:
        """Stop the dispatchers after the queued work; closes the inner evaluator too."""
        for _ in self._threads:  # one stop marker per dispatcher: each consumes one
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
