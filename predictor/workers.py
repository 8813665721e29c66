"""The worker threads that compute forward passes: the mechanics, no policy.

`count` threads share the accepted requests (jobs), on one `threading.Condition` over a deque of
new jobs and a list of jobs in progress; each thread computes one pass at a time, so up to
`count` passes run at once (as Triton's instance count, on one model: ONNX Runtime and torch
sessions take concurrent calls). `scheduler.next_pass` picks the texts of each pass.

- With nothing in progress, a worker takes the new jobs and, while there is concurrent traffic
  (more than one request in its current or last spell of work between idle moments), waits at
  most `max_wait_s` for more to fill a pass (one worker gathers at a time; the others leave its
  texts to it); a lone request on a quiet server runs at once.
- Texts left over after a worker started a pass are started by an idle worker at once.
- A cancelled caller's remaining texts are dropped. A pass that fails fails every job that had a
  text in it (their remaining texts are dropped); the other jobs carry on. Every caller gets
  exactly its own rows, in order, whichever passes and workers computed them.
- `stop` returns at once: from then on `submit` refuses new jobs (503), and the workers finish
  every job already accepted, then end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.errors import Unavailable

from . import metrics
from .admission import Admission
from .scheduler import Budget, Request, is_full, next_pass, take

if TYPE_CHECKING:
    from .classifier import Encoded, SentimentClassifier

log = logging.getLogger(__name__)

SHUTTING_DOWN = "the predictor is shutting down; retry"


@dataclass(eq=False)
class _Job:
    """An accepted request: its texts, the scheduler's view of it, and its caller's future."""

    encoded: list[Encoded]
    request: Request
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    order: list[int] = field(init=False)
    """Its rows shortest first, as `request.lengths` lists them: the rows not yet in a pass are the last ones."""
    unanswered: int = field(init=False)
    probs: np.ndarray | None = None
    retired: bool = False

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.encoded)), key=lambda i: len(self.encoded[i].ids))
        self.unanswered = len(self.encoded)

    def next_rows(self, count: int) -> list[int]:
        """The rows of its `count` shortest texts not yet in a pass."""
        start = len(self.order) - len(self.request.lengths)
        return self.order[start:start + count]


class Workers:
    """Computes the forward passes of submitted jobs on `count` threads."""

    def __init__(self, classifier: SentimentClassifier, budget: Budget, admission: Admission, max_wait_s: float,
                 count: int):
        self.classifier = classifier
        self.budget = budget
        self.admission = admission
        self.max_wait_s = max_wait_s
        self.count = count
        self._cond = threading.Condition()  # guards everything below, and `admission`'s counts
        self._new: deque[_Job] = deque()  # submitted, not yet taken by a worker
        self._active: list[_Job] = []  # taken, not yet answered
        self._seq = itertools.count()
        self._in_flight = 0  # passes being computed
        self._gathering = False  # a worker is waiting for company for its pass
        self._jobs_since_idle = 0
        self._was_concurrent = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.batches_run = 0
        self.jobs_taken = 0

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name=f"batch-worker-{i}", daemon=True)
                         for i in range(self.count)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Refuse new jobs from now on; the workers finish the accepted ones, then end. Returns at once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait until every worker has ended (after `stop`); False if one is still running after `timeout` s."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, encoded: list[Encoded], tokens: int, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """Queue a job for the texts' probabilities; Overloaded when the queue is full, Unavailable once stopping."""
        with self._cond:
            if self._stopping:  # no worker may be left to compute it
                raise Unavailable(SHUTTING_DOWN)
            self.admission.admit(len(encoded), tokens)
            job = _Job(encoded, Request(next(self._seq), [len(e.ids) for e in encoded]), loop.create_future(), loop)
            self._new.append(job)
            self._cond.notify_all()
        return job.future

    # --- on the worker threads ----------------------------------------------------------------

    def _run(self) -> None:
        while (work := self._next_work()) is not None:
            self._compute(*work)

    def _next_work(self) -> tuple[list[tuple[_Job, int]], int, int] | None:
        """Wait for the next pass: its (job, row) pairs, padded width and the texts' own tokens; None once
        stopping with nothing left."""
        with self._cond:
            while True:
                self._drop_cancelled()
                fresh = not self._active  # a new spell of work: while traffic is concurrent, wait for company
                self._take_new()
                if not any(job.request.lengths for job in self._active):
                    if self._stopping:
                        return None
                    if not self._in_flight:
                        self._idle()
                    self._cond.wait()
                elif self._gathering and not self._stopping:
                    self._cond.wait()  # another worker is filling a pass with these texts
                elif fresh and not self._stopping and (self._was_concurrent or self._jobs_since_idle > 1):
                    self._gather()
                else:
                    return self._start_pass()

    def _take_new(self) -> None:
        while self._new:
            self._active.append(self._new.popleft())
            self.jobs_taken += 1
            self._jobs_since_idle += 1

    def _idle(self) -> None:
        """Nothing in progress: remember whether the spell of work that just ended was concurrent."""
        if self._jobs_since_idle:
            self._was_concurrent, self._jobs_since_idle = self._jobs_since_idle > 1, 0

    def _gather(self) -> None:
        """Take new jobs for up to `max_wait_s` or until they fill a pass (holding the lock only between waits)."""
        self._gathering = True
        deadline = time.monotonic() + self.max_wait_s
        try:
            while (not self._stopping and not is_full([job.request for job in self._active], self.budget)
                   and (remaining := deadline - time.monotonic()) > 0):
                self._cond.wait(remaining)
                self._take_new()
        finally:
            self._gathering = False

    def _start_pass(self) -> tuple[list[tuple[_Job, int]], int, int]:
        requests = [job.request for job in self._active]
        chosen = next_pass(requests, self.budget)
        rows: list[tuple[_Job, int]] = []
        for i, count in chosen.takes:
            job = self._active[i]
            rows += [(job, row) for row in job.next_rows(count)]
        take(requests, chosen)
        tokens = sum(len(job.encoded[row].ids) for job, row in rows)
        self.admission.release(len(rows), tokens)
        self._in_flight += 1
        if any(job.request.lengths for job in self._active):
            self._cond.notify_all()  # texts left over: an idle worker can start on them
        return rows, chosen.width, tokens

    def _compute(self, rows: list[tuple[_Job, int]], width: int, text_tokens: int) -> None:
        metrics.BATCH_TEXTS.observe(len(rows))
        metrics.BATCH_TOKENS.observe(len(rows) * width)
        metrics.PASS_TOKENS.labels(kind="text").inc(text_tokens)
        metrics.PASS_TOKENS.labels(kind="padding").inc(len(rows) * width - text_tokens)
        jobs = list(dict.fromkeys(job for job, _ in rows))
        try:
            probs = self.classifier.predict_encoded([job.encoded[row] for job, row in rows])
        except Exception as exc:  # a pass's failure reaches every job with a text in it
            log.exception("forward pass of %d texts from %d requests failed", len(rows), len(jobs))
            with self._cond:
                self._in_flight -= 1
                for job in jobs:
                    self._retire(job, error=exc)
            return
        with self._cond:
            self._in_flight -= 1
            self.batches_run += 1
            for (job, row), p in zip(rows, probs, strict=True):
                if job.retired:  # cancelled, or failed in another pass
                    continue
                if job.probs is None:
                    job.probs = np.empty((len(job.encoded), len(p)), dtype=np.float32)
                job.probs[row] = p
                job.unanswered -= 1
            for job in jobs:
                if not job.retired and job.unanswered == 0:
                    self._retire(job, result=job.probs)

    def _drop_cancelled(self) -> None:
        for job in [job for job in self._active if job.future.cancelled()]:
            self._retire(job)

    def _retire(self, job: _Job, result: np.ndarray | None = None, error: BaseException | None = None) -> None:
        """Take a job out of progress, dropping its texts not yet in a pass, and answer it."""
        if job.retired:
            return
        job.retired = True
        self._active.remove(job)
        if job.request.lengths:
            self.admission.release(len(job.request.lengths), job.request.pending_tokens)
            job.request.lengths.clear()
            job.request.pending_tokens = 0
        if result is not None or error is not None:
            with contextlib.suppress(RuntimeError):  # the caller's event loop has closed: nobody waits
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)


def _resolve(future: asyncio.Future, result: np.ndarray | None, exc: BaseException | None) -> None:
    if future.done():  # cancelled while we computed
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
