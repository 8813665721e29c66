"""A bounded queue that batches concurrent requests into few, token-budgeted forward passes.

Callers tokenize their own texts before queueing, so a request over `max_request_tokens` is
refused (413) and a full queue (`max_queued_texts` or `max_queued_tokens`) answered 429 before
anything waits. `workers` threads (one by default) share the accepted requests (jobs) in progress
and each runs one forward pass at a time, so up to `workers` passes run at once (as Triton's
instance count, on one model: ONNX Runtime and torch sessions take concurrent calls). Each
forward pass holds at most `max_batch_size` texts and `max_batch_tokens` padded tokens (texts x
the longest of them), so a large request is split into many passes and other requests' passes
run between them (or beside them, on another worker):

- Jobs are served least-served first (fewest tokens computed so far), then those needing fewer
  passes, then those with fewer tokens by steps of `SIZE_CLASS_TOKENS`, then first come first
  served: a new short request leads the next pass while a large or long one is under way or
  waiting, large jobs take turns, and sentences of similar size keep their order. A job that younger jobs overtook in
  `MAX_SKIPPED_PASSES` passes in a row goes first, so none is starved.
- Each job's texts go shortest first, and a text joins a pass if its length is within 2x of the
  pass's width or it adds at most `pad_slack_tokens` of padding (a few times what a separate
  pass costs), so short texts never ride, padded, in a pass of long ones.
- With nothing in progress, a worker takes the next requests and, while there is concurrent
  traffic (more than one request in its current or last spell of work between idle moments),
  waits at most `max_wait_ms` for more to fill a pass; a lone request on a quiet server runs at once.
- A cancelled caller's remaining texts are dropped. A pass that fails fails every job that had
  a text in it (their remaining texts are dropped); the other jobs carry on. Every caller gets
  exactly its own rows, in order, whichever passes and workers computed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from serving.errors import Overloaded, TooLarge, Unavailable

from . import metrics
from .classifier import Encoded, SentimentClassifier

log = logging.getLogger(__name__)

MAX_SKIPPED_PASSES = 4
"""A job overtaken by younger jobs in this many passes in a row leads the next one."""
PAD_SLACK_TOKENS = 64
"""Most padding a text of a very different length (over 2x) may add to a pass it joins; beyond
that it waits for a pass of its own length.

A pass costs about its padded tokens plus a fixed cost worth 15-25 tokens (MiniLM and DistilBERT on
ONNX Runtime, 2 cores); a few times that lets short texts of different lengths share passes while a
short text never rides, padded, in a pass of long ones."""
SIZE_CLASS_TOKENS = 128
"""Requests within the same step of this many tokens are served first come first served, so a
slightly longer sentence is not overtaken by shorter ones; a 300-token text waits behind them."""
INLINE_TOKENIZE_CHARS = 512
"""Requests up to this many characters are tokenized on the event loop (at most ~0.5 ms; a short
sentence 85 us, against 225 us through a thread); longer ones in a thread (the tokenizer releases
the GIL), so the loop never stalls on one: 256 texts of 10,000 characters take ~1.2 s."""


_WAKE = object()
"""Queued for a worker waiting on the queue when another worker took jobs it cannot compute alone."""


@dataclass(eq=False)
class _Job:
    encoded: list[Encoded]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    seq: int
    pending: list[int] = field(init=False)
    """Rows not yet in a pass, longest first (`pop()` gives the shortest)."""
    pending_tokens: int = field(init=False)
    unanswered: int = field(init=False)
    served_tokens: int = 0
    skipped_passes: int = 0
    probs: np.ndarray | None = None
    retired: bool = False

    def __post_init__(self) -> None:
        self.pending = sorted(range(len(self.encoded)), key=lambda i: len(self.encoded[i].ids), reverse=True)
        self.pending_tokens = sum(len(e.ids) for e in self.encoded)
        self.unanswered = len(self.encoded)

    def next_length(self) -> int:
        return len(self.encoded[self.pending[-1]].ids)

    def take_next(self) -> int:
        """The shortest row not yet in a pass, now counted as served."""
        row = self.pending.pop()
        length = len(self.encoded[row].ids)
        self.pending_tokens -= length
        self.served_tokens += length
        return row


class BatchQueue:
    """Batches `submit` calls from any number of coroutines onto `workers` worker threads."""

    def __init__(self, classifier: SentimentClassifier, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queued_texts: int = 2048, max_batch_tokens: int = 512, max_request_tokens: int = 16_384,
                 max_queued_tokens: int = 32_768, pad_slack_tokens: int = PAD_SLACK_TOKENS, workers: int = 1):
        if min(max_batch_size, max_queued_texts, max_batch_tokens, max_request_tokens, workers) < 1:
            raise ValueError("max_batch_size, max_queued_texts, max_batch_tokens, max_request_tokens and workers "
                             "must be at least 1")
        if max_queued_tokens < max_request_tokens:
            raise ValueError(f"max_queued_tokens ({max_queued_tokens}) must be at least max_request_tokens "
                             f"({max_request_tokens}), or a request within the budget could never be queued")
        self.classifier = classifier
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self.max_batch_tokens = max_batch_tokens
        self.max_request_tokens = max_request_tokens
        self.max_queued_tokens = max_queued_tokens
        self.pad_slack_tokens = pad_slack_tokens
        self._queue: queue.SimpleQueue[_Job | object | None] = queue.SimpleQueue()
        self._queued_texts = 0
        self._queued_tokens = 0
        self.workers = workers
        self._lock = threading.Lock()  # the queued counters (submit and workers)
        self._work_lock = threading.Lock()  # the workers' state below; taken before `_lock`, never after
        self._threads: list[threading.Thread] = []
        self._seq = itertools.count()
        self._active: list[_Job] = []  # jobs taken from the queue, not yet answered
        self._in_flight = 0  # passes being computed
        self._waiting = 0  # workers waiting for the queue
        self._stopping = False
        self._jobs_since_idle = 0
        self._was_concurrent = False
        self.batches_run = 0
        self.jobs_taken = 0

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name=f"batch-worker-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish the passes under way; every other request gets 503."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        with self._work_lock:
            while self._drain():  # past every stop signal left in the queue
                pass
            for job in list(self._active):
                self._retire(job, error=Unavailable("the predictor is shutting down; retry"))

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities [len(texts), num_labels].

        Raises TooLarge when the texts hold more than `max_request_tokens` tokens after
        truncation, and Overloaded when the queue is full (checked before tokenizing too, so
        an overloaded server sheds load cheaply).
        """
        with self._lock:
            self._check_room(len(texts), 0)
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encoded = self.classifier.encode(texts)
        else:
            encoded = await asyncio.to_thread(self.classifier.encode, texts)
        tokens = sum(len(e.ids) for e in encoded)
        if tokens > self.max_request_tokens:
            metrics.REJECTED.labels(reason="too_many_tokens").inc()
            raise TooLarge(f"request has {tokens:,} tokens after truncation to {self.classifier.max_length:,} "
                           f"per text; the limit is {self.max_request_tokens:,}")
        with self._lock:
            self._check_room(len(texts), tokens)
            self._queued_texts += len(texts)
            self._queued_tokens += tokens
            self._publish()
        loop = asyncio.get_running_loop()
        job = _Job(encoded, loop.create_future(), loop, next(self._seq))
        self._queue.put(job)
        return await job.future

    def _check_room(self, texts: int, tokens: int) -> None:
        if self._queued_texts + texts > self.max_queued_texts:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise Overloaded(f"server busy: {self._queued_texts} texts queued, the queue limit is "
                             f"{self.max_queued_texts}; retry later")
        if self._queued_tokens + tokens > self.max_queued_tokens:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise Overloaded(f"server busy: {self._queued_tokens:,} tokens queued, the queue limit is "
                             f"{self.max_queued_tokens:,} tokens; retry later")

    def _publish(self) -> None:
        metrics.QUEUED_TEXTS.set(self._queued_texts)
        metrics.QUEUED_TOKENS.set(self._queued_tokens)

    # --- the worker threads -------------------------------------------------------------------

    def _run(self) -> None:
        while (work := self._next_work()) is not None:
            self._run_pass(*work)

    def _next_work(self) -> tuple[list[tuple[_Job, int]], int] | None:
        """Wait for texts to compute: the next pass (rows and padded width), or None when stopping."""
        while True:
            with self._work_lock:
                fresh = not self._active  # a new spell of work: while traffic is concurrent, wait for company
                if self._stopping or self._drain():
                    return None
                pending = any(job.pending for job in self._active)
                if pending and not fresh:
                    rows, width = self._next_pass()
                    if rows:
                        self._in_flight += 1
                        if self._waiting and any(job.pending for job in self._active):
                            self._queue.put(_WAKE)  # texts left over: an idle worker can start on them
                        return rows, width
                    pending = False  # their callers all cancelled
                if not pending:
                    if not self._in_flight:  # idle: remember whether the traffic since the last idle was concurrent
                        self._was_concurrent, self._jobs_since_idle = self._jobs_since_idle > 1, 0
                    self._waiting += 1
            if not pending:
                job = self._queue.get()
                with self._work_lock:
                    self._waiting -= 1
                    if job is _WAKE:  # leftover texts: start on them at once
                        continue
                    if self._take(job):
                        return None
            if self._wait_for_company():
                return None

    def _wait_for_company(self) -> bool:
        """Take more jobs for up to `max_wait_ms` while traffic is concurrent and the pass is not full;
        True for the stop signal."""
        with self._work_lock:
            concurrent = self._was_concurrent or self._jobs_since_idle > 1
            full = self._pass_is_full()
        deadline = time.monotonic() + (self.max_wait_s if concurrent else 0.0)
        while not full and (remaining := deadline - time.monotonic()) > 0:
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            with self._work_lock:
                if self._take(job):
                    return True
                full = self._pass_is_full()
        return False

    def _drain(self) -> bool:
        """Take every queued job without waiting; True for the stop signal."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if self._take(job):
                return True

    def _take(self, job: _Job | object | None) -> bool:
        """Put a job in progress; True for the stop signal."""
        if job is None:
            self._stopping = True
            return True
        if job is _WAKE:
            return False
        self._active.append(job)
        self.jobs_taken += 1
        self._jobs_since_idle += 1
        return False

    def _pass_is_full(self) -> bool:
        texts = sum(len(job.pending) for job in self._active)
        return texts >= self.max_batch_size or sum(j.pending_tokens for j in self._active) >= self.max_batch_tokens

    def _next_pass(self) -> tuple[list[tuple[_Job, int]], int]:
        """The (job, row) pairs of the next forward pass, and its padded width."""
        for job in [j for j in self._active if j.future.cancelled()]:
            self._retire(job)
        order = sorted(self._active, key=self._priority)
        rows: list[tuple[_Job, int]] = []
        width = 0
        for job in order:
            if len(rows) >= self.max_batch_size or (len(rows) + 1) * width > self.max_batch_tokens:
                break
            while job.pending and len(rows) < self.max_batch_size:
                length = job.next_length()
                if rows and not self._fits(len(rows), width, length):
                    break
                rows.append((job, job.take_next()))
                width = max(width, length)
        served = {id(job) for job, _ in rows}
        youngest = max(job.seq for job, _ in rows) if rows else -1
        for job in self._active:
            if id(job) in served:
                job.skipped_passes = 0
            elif job.pending and youngest > job.seq:  # overtaken by a request that arrived after it
                job.skipped_passes += 1
        return rows, width

    def _priority(self, job: _Job) -> tuple:
        """Overtaken too often first (oldest first); then least served, fewest passes left, smaller
        size class, oldest."""
        if job.skipped_passes >= MAX_SKIPPED_PASSES:
            return (0, job.seq, 0, 0, 0)
        passes_left = max(-(-job.pending_tokens // self.max_batch_tokens), -(-len(job.pending) // self.max_batch_size))
        return (1, job.served_tokens, passes_left, job.pending_tokens // SIZE_CLASS_TOKENS, job.seq)

    def _fits(self, count: int, width: int, length: int) -> bool:
        """Whether a text of `length` tokens may join a pass of `count` texts padded to `width`."""
        if (count + 1) * max(width, length) > self.max_batch_tokens:
            return False
        if width <= 2 * length and length <= 2 * width:  # similar lengths: batching wins
            return True
        padding = count * (length - width) if length > width else width - length
        return padding <= self.pad_slack_tokens

    def _run_pass(self, rows: list[tuple[_Job, int]], width: int) -> None:
        with self._lock:
            self._queued_texts -= len(rows)
            self._queued_tokens -= sum(len(job.encoded[i].ids) for job, i in rows)
            self._publish()
        metrics.BATCH_TEXTS.observe(len(rows))
        metrics.BATCH_TOKENS.observe(len(rows) * width)
        jobs = list(dict.fromkeys(job for job, _ in rows))
        try:
            probs = self.classifier.predict_encoded([job.encoded[i] for job, i in rows])
        except Exception as exc:  # a pass's failure reaches every job with a text in it
            log.exception("forward pass of %d texts from %d requests failed", len(rows), len(jobs))
            with self._work_lock:
                self._in_flight -= 1
                for job in jobs:
                    self._retire(job, error=exc)
            return
        with self._work_lock:
            self._in_flight -= 1
            self.batches_run += 1
            for (job, i), row in zip(rows, probs, strict=True):
                if job.retired:  # cancelled, or failed in another pass
                    continue
                if job.probs is None:
                    job.probs = np.empty((len(job.encoded), len(row)), dtype=np.float32)
                job.probs[i] = row
                job.unanswered -= 1
            for job in jobs:
                if not job.retired and job.unanswered == 0:
                    self._retire(job, result=job.probs)

    def _retire(self, job: _Job, result: np.ndarray | None = None, error: BaseException | None = None) -> None:
        """Take a job out of progress, dropping its remaining texts from the queue, and answer it."""
        if job.retired:
            return
        job.retired = True
        self._active.remove(job)
        if job.pending:
            with self._lock:
                self._queued_texts -= len(job.pending)
                self._queued_tokens -= job.pending_tokens
                self._publish()
            job.pending.clear()
            job.pending_tokens = 0
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
