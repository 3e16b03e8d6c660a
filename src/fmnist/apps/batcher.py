"""An asyncio micro-batcher: concurrent one-item predictions, coalesced into batches for one worker thread.

A model predicts 32 images in far less than 32 times the time of one, so a server gains by waiting a few ms for
company: `MicroBatcher.predict(item)` queues one item, and a worker takes up to `max_batch` queued items once
the oldest has waited `wait_s`, stacks them and calls `predict_batch` on them in its own thread, so the event loop
keeps serving meanwhile. The batch goes sooner when `max_batch` items are queued, and when `coming()` (if given)
says that no more items are on their way, as waiting would then only add latency. Items that queued while the
previous batch ran have waited already and go at once. At most `max_queue` items wait; one more is refused with
`Overloaded` (a server answers 503) instead of queueing without bound. Generic over any NumPy function
(N, ...) -> (N, ...); nothing here imports TensorFlow.
"""

import asyncio
import collections
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np


class Overloaded(RuntimeError):
    """The queue is full: the item was refused, and trying again shortly may succeed."""


@dataclass(frozen=True)
class _Waiting:
    """One queued item, the future its caller awaits, and when it arrived (the event loop's clock)."""

    item: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float


class MicroBatcher:
    """Coalesces concurrent `await predict(item)` calls into calls of `predict_batch(np.stack(items))`.

    Use it as an async context manager inside the event loop that calls `predict`: entering starts the worker,
    leaving stops it and cancels what still waits. `coming()`, if given, counts the items on their way (in a
    server: the requests being decoded); a batch waits for company only while it is above 0.
    """

    def __init__(
        self,
        predict_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        wait_s: float = 0.002,
        max_queue: int = 64,
        coming: Callable[[], int] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or wait_s < 0:
            raise ValueError(
                f"need max_batch >= 1, max_queue >= 1, wait_s >= 0; got {max_batch}, {max_queue}, {wait_s}"
            )
        self.predict_batch, self.max_batch, self.wait_s, self.max_queue = predict_batch, max_batch, wait_s, max_queue
        self.coming = coming
        self._waiting: collections.deque[_Waiting] = collections.deque()
        # Set when the worker should look again: the first item arrived, a batch is full, nothing more is coming,
        # or the oldest item has waited `wait_s` (a timer).
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batcher")  # one batch at a time
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not those being predicted)."""
        return len(self._waiting)

    async def __aenter__(self) -> "MicroBatcher":
        self._worker = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for waiting in self._waiting:
            waiting.future.cancel()
        self._waiting.clear()
        self._thread.shutdown(wait=False)  # a batch still running finishes in its thread; nobody awaits it

    async def predict(self, item: np.ndarray) -> np.ndarray:
        """The prediction for one item (one row of `predict_batch`'s output); `Overloaded` if the queue is full."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running: use it as `async with MicroBatcher(...)`")
        if len(self._waiting) >= self.max_queue:
            raise Overloaded(f"{self.max_queue} requests are already waiting for the model")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(item, loop.create_future(), loop.time())
        self._waiting.append(waiting)
        if len(self._waiting) in (1, self.max_batch) or not self._more_coming():
            self._wakeup.set()
        return await waiting.future

    def _more_coming(self) -> bool:
        """Whether more items may join a batch soon: yes without `coming` (unknown), else if any are on their way."""
        return self.coming is None or self.coming() > 0

    async def _run(self) -> None:
        """Forever: the next batch, predicted in the worker thread, its rows handed to the callers still waiting."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [w for w in await self._next_batch() if not w.future.done()]  # a caller may have given up
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(self._thread, self.predict_batch, np.stack([w.item for w in batch]))
                if len(rows) != len(batch):
                    raise ValueError(f"predict_batch answered {len(rows)} rows for {len(batch)} items")
            except Exception as exc:  # every caller of the batch gets the error, and the worker goes on
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            for waiting, row in zip(batch, rows, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(row)

    async def _next_batch(self) -> list[_Waiting]:
        """Up to `max_batch` queued items, once the oldest has waited `wait_s`, or sooner if a batch is full or
        nothing more is coming."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._waiting[0].arrived + self.wait_s
        while len(self._waiting) < self.max_batch and self._more_coming() and loop.time() < deadline:
            self._wakeup.clear()
            timer = loop.call_at(deadline, self._wakeup.set)
            await self._wakeup.wait()
            timer.cancel()
        return [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
