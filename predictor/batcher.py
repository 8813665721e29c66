"""A bounded queue that batches concurrent requests into few forward passes.

One worker thread owns the classifier. Callers on the event loop await futures; the
worker takes whatever is queued and, while there is concurrent traffic (the previous
batch held more than one request), waits at most `max_wait_ms` for more while the batch
is not full; a lone request on a quiet server runs at once. It tokenizes the batch at
once, sorts texts by token length so each forward pass pads little, runs passes of at
most `max_batch_size` texts, and hands every caller exactly its own rows.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from serving.errors import Overloaded

from . import metrics
from .classifier import SentimentClassifier

log = logging.getLogger(__name__)


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)


class BatchQueue:
    """Batches `submit` calls from any number of coroutines onto one worker thread."""

    def __init__(self, classifier: SentimentClassifier, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queued_texts: int = 2048):
        if max_batch_size < 1 or max_queued_texts < 1:
            raise ValueError("max_batch_size and max_queued_texts must be at least 1")
        self.classifier = classifier
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queued_texts = max_queued_texts
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued_texts = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._concurrent_traffic = False
        self.batches_run = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batch-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities [len(texts), num_labels]; raises Overloaded when the queue is full."""
        with self._lock:
            if self._queued_texts + len(texts) > self.max_queued_texts:
                metrics.REJECTED.labels(reason="queue_full").inc()
                raise Overloaded(
                    f"server busy: {self._queued_texts} texts queued, the queue limit is "
                    f"{self.max_queued_texts}; retry later")
            self._queued_texts += len(texts)
            metrics.QUEUED_TEXTS.set(self._queued_texts)
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            size = len(first.texts)
            deadline = time.monotonic() + (self.max_wait_s if self._concurrent_traffic else 0.0)
            while size < self.max_batch_size:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        job = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if job is None:
                    self._queue.put(None)
                    break
                jobs.append(job)
                size += len(job.texts)
            self._concurrent_traffic = len(jobs) > 1
            self._process(jobs)

    def _process(self, jobs: list[_Job]) -> None:
        with self._lock:
            self._queued_texts -= sum(len(j.texts) for j in jobs)
            metrics.QUEUED_TEXTS.set(self._queued_texts)
        live = [j for j in jobs if not j.future.cancelled()]
        if not live:
            return
        try:
            texts = [t for j in live for t in j.texts]
            encoded = self.classifier.encode(texts)
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
            probs = np.empty((len(texts), len(self.classifier.labels)), dtype=np.float32)
            for start in range(0, len(order), self.max_batch_size):
                rows = order[start : start + self.max_batch_size]
                probs[rows] = self.classifier.predict_encoded([encoded[i] for i in rows])
                self.batches_run += 1
                metrics.BATCH_TEXTS.observe(len(rows))
                metrics.BATCH_TOKENS.observe(len(rows) * max(len(encoded[i].ids) for i in rows))
        except Exception as exc:  # a batch's failure reaches all of its waiters
            log.exception("batch of %d texts failed", sum(len(j.texts) for j in live))
            for job in live:
                job.loop.call_soon_threadsafe(_resolve, job.future, None, exc)
            return
        offset = 0
        for job in live:
            n = len(job.texts)
            job.loop.call_soon_threadsafe(_resolve, job.future, probs[offset : offset + n], None)
            offset += n


def _resolve(future: asyncio.Future, result: np.ndarray | None, exc: BaseException | None) -> None:
    if future.done():  # cancelled while we computed
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
