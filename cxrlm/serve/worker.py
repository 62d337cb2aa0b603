"""One model behind a bounded queue. With the plain engine one thread runs jobs one at a time, so the model is never
shared; an engine that batches concurrent requests itself (`engine.capabilities.concurrent`: fast, remote) gets
several threads.

A job is a function of a `Job` (its cancel flag, deadline and text sink). Streaming models call `job.emit(text)`
for every piece; `emit` raises `Cancelled` once the client has gone or the deadline has passed, which unwinds
generation mid-way. A request takes a place in the queue (`reserve`) before its images are decoded, so a full queue
raises `QueueFull` at once, before any work (the API answers 429 with Retry-After); `submit` hands the place to the
job, which frees it when it starts.
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


class Slot:
    """A place in the queue, held from admission until its job is submitted (or the request fails first)."""

    def __init__(self, worker: ModelWorker):
        self._worker, self.open = worker, True

    def release(self) -> None:
        """Give the place back unused; nothing once a job has taken it."""
        if self.open:
            self.open = False
            self._worker._leave()


class ModelWorker:
    def __init__(self, max_queue: int = 8, threads: int = 1):
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()  # bounded by the places handed out (`reserve`)
        self._waiting = 0  # places held: reserved, or queued and not yet started
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
        return self._waiting + self._running

    def reserve(self) -> Slot:
        """A place in the queue, or QueueFull at once: call it before any costly work on the request."""
        with self._lock:
            if self._stopping:
                raise QueueFull(self._mean_s)
            if self._waiting >= self.max_queue:
                raise QueueFull(self._mean_s * (self.depth + 1))
            self._waiting += 1
        return Slot(self)

    def submit(self, job: Job, slot: Slot | None = None) -> Future:
        """Queue `job` in `slot` (reserved earlier), or in a place reserved now."""
        slot = slot or self.reserve()
        if not slot.open:
            raise ValueError("this queue place was already used or released")
        if self._stopping:
            slot.release()
            raise QueueFull(self._mean_s)
        slot.open = False  # the job holds the place now; `_run` frees it when the job starts
        self._jobs.put(job)
        return job.future

    def _leave(self) -> None:
        with self._lock:
            self._waiting -= 1

    def stop(self, grace_s: float = 30.0) -> None:
        """Graceful shutdown: queued jobs are cancelled, the running one may finish within `grace_s`."""
        self._stopping = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._leave()
                job.future.set_exception(Cancelled("cancelled"))
        deadline = time.monotonic() + grace_s
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting -= 1
                if not job.future.set_running_or_notify_cancel():
                    continue
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
