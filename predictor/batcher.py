"""A bounded queue that batches concurrent requests into few, token-budgeted forward passes.

Three parts, each in its own module:
- `admission`: a request over `max_request_tokens` is refused (413) and a full queue
  (`max_queued_texts` or `max_queued_tokens`) answered 429 before anything waits;
- `scheduler`: which texts go into the next pass (at most `max_batch_size` texts and
  `max_batch_tokens` padded tokens), least served first, so a large request is split into many
  passes and other requests' passes run between them;
- `workers`: the `workers` threads that compute the passes, one at a time each.

`BatchQueue` puts them together: callers tokenize their own texts (so admission counts tokens
before queueing) and wait on a future.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from serving.errors import Unavailable

from .admission import Admission
from .scheduler import PAD_SLACK_TOKENS, Budget
from .workers import SHUTTING_DOWN, Workers

if TYPE_CHECKING:
    from .classifier import SentimentClassifier

INLINE_TOKENIZE_CHARS = 512
"""Requests up to this many characters are tokenized on the event loop (at most ~0.5 ms; a short
sentence 85 us, against 225 us through a thread); longer ones in a thread (the tokenizer releases
the GIL), so the loop never stalls on one: 256 texts of 10,000 characters take ~1.2 s."""


class BatchQueue:
    """Batches `submit` calls from any number of coroutines onto `workers` worker threads."""

    def __init__(self, classifier: SentimentClassifier, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queued_texts: int = 2048, max_batch_tokens: int = 512, max_request_tokens: int = 16_384,
                 max_queued_tokens: int = 32_768, pad_slack_tokens: int = PAD_SLACK_TOKENS, workers: int = 1):
        if min(max_batch_size, max_queued_texts, max_batch_tokens, max_request_tokens, workers) < 1:
            raise ValueError("max_batch_size, max_queued_texts, max_batch_tokens, max_request_tokens and workers "
                             "must be at least 1")
        self.classifier = classifier
        self.admission = Admission(max_queued_texts, max_request_tokens, max_queued_tokens)
        self.workers = Workers(classifier, Budget(max_batch_size, max_batch_tokens, pad_slack_tokens),
                               self.admission, max_wait_ms / 1000, workers)

    def start(self) -> None:
        self.workers.start()

    def stop(self) -> None:
        """Refuse new requests (503) from now on; every accepted one still gets its answer. Returns at once,
        so it may be called on the event loop."""
        self.workers.stop()

    def join(self, timeout: float) -> bool:
        """Wait (off the event loop) until the workers have finished after `stop`; False on timeout."""
        return self.workers.join(timeout)

    @property
    def queued_texts(self) -> int:
        return self.admission.queued_texts

    @property
    def queued_tokens(self) -> int:
        return self.admission.queued_tokens

    @property
    def batches_run(self) -> int:
        return self.workers.batches_run

    @property
    def jobs_taken(self) -> int:
        return self.workers.jobs_taken

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities [len(texts), num_labels].

        Raises TooLarge when the texts hold more than `max_request_tokens` tokens after
        truncation, Overloaded when the queue is full (checked before tokenizing too, so an
        overloaded server sheds load cheaply), and Unavailable once stopping.
        """
        if self.workers.stopping:
            raise Unavailable(SHUTTING_DOWN)
        self.admission.check_room(len(texts), 0)  # unlocked: a cheap early refusal; `submit` below decides
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            encoded = self.classifier.encode(texts)
        else:
            encoded = await asyncio.to_thread(self.classifier.encode, texts)
        tokens = sum(len(e.ids) for e in encoded)
        self.admission.check_size(tokens, self.classifier.max_length)
        return await self.workers.submit(encoded, tokens, asyncio.get_running_loop())
