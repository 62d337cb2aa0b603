"""One model behind a bounded queue. With the plain engine one thread runs jobs one at a time, so the model is never
shared; an engine that batches concurrent requests itself (`engine.capabilities.concurrent`: fast, remote) gets
several threads.

A job is a function of a `Job` (its cancel flag, deadline and text sink). Streaming models call `job.emit(text)`
for every piece; `emit` raises `Cancelled` once the client has gone or the deadline has passed, which unwinds
generation mid-way. A full queue raises `QueueFull` at once (the API answers 429 with Retry-After).
Not here: HTTP or storage.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future


class QueueFull(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__(f"the model queue is full; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Cancelled(Exception):
    """Raised inside generation: the client disconnected, or the request ran past its deadline."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "cancelled" | "timeout"


class Job:
    def __init__(self, fn: Callable[[Job], object], timeout_s: float, on_text: Callable[[str], None] | None = None):
        self.fn = fn
        self.deadline = time.monotonic() + timeout_s
        self.on_text = on_text
        self.future: Future = Future()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled")
        if time.monotonic() > self.deadline:
            raise Cancelled("timeout")

    def emit(self, text: str) -> None:
        """The model's `on_text` callback: forwards a piece, and stops generation when asked to."""
        self.check()
        if self.on_text is not None:
            self.on_text(text)


class ModelWorker:
    def __init__(self, max_queue: int = 8, threads: int = 1):
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._threads = [threading.Thread(target=self._run, name=f"cxrlm-model-{i}", daemon=True)
                         for i in range(threads)]
        self._running = 0
        self._lock = threading.Lock()
        self._mean_s = 5.0  # running mean of job time, for Retry-After
        self._stopping = False
        for thread in self._threads:
            thread.start()

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and not self._stopping

    @property
    def depth(self) -> int:
        return self._jobs.qsize() + self._running

    def submit(self, job: Job) -> Future:
        if self._stopping:
            raise QueueFull(self._mean_s)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(self._mean_s * (self.depth + 1)) from None
        return job.future

    def stop(self, grace_s: float = 30.0) -> None:
        """Graceful shutdown: queued jobs are cancelled, the running one may finish within `grace_s`."""
        self._stopping = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.set_exception(Cancelled("cancelled"))
        deadline = time.monotonic() + grace_s
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running += 1
            start = time.monotonic()
            try:
                job.check()  # cancelled or expired while queued: do not start it
                job.future.set_result(job.fn(job))
            except BaseException as err:  # noqa: BLE001 - handed to the waiting request, which reports it
                job.future.set_exception(err)
            finally:
                with self._lock:
                    self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - start)
