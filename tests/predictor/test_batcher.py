"""Unit tests of the batching queue on a tiny random model."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest

from predictor.batcher import BatchQueue
from predictor.classifier import SentimentClassifier
from serving.errors import Overloaded
from tests.predictor.tiny_model import WORDS, build_tiny_model


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return SentimentClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def _texts(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 30))) for _ in range(n)]


def test_concurrent_callers_get_exactly_their_own_rows(classifier):
    rng = random.Random(7)
    requests = [_texts(rng, rng.randint(1, 5)) for _ in range(60)]
    queue = BatchQueue(classifier, max_batch_size=16, max_wait_ms=5)
    queue.start()

    async def run():
        return await asyncio.gather(*(queue.submit(texts) for texts in requests))

    try:
        results = asyncio.run(run())
    finally:
        queue.stop()
    for texts, probs in zip(requests, results, strict=True):
        np.testing.assert_allclose(probs, classifier.predict(texts), atol=1e-5)
    # 60 requests with ~180 texts ran in far fewer passes than requests.
    assert queue.batches_run < len(requests)


def test_request_larger_than_a_batch_is_split(classifier):
    texts = _texts(random.Random(1), 50)
    queue = BatchQueue(classifier, max_batch_size=8, max_wait_ms=0)
    queue.start()
    try:
        probs = asyncio.run(queue.submit(texts))
    finally:
        queue.stop()
    assert queue.batches_run == 7
    np.testing.assert_allclose(probs, np.concatenate([classifier.predict([t]) for t in texts]), atol=1e-5)


def test_lone_request_on_a_quiet_server_does_not_wait_for_a_batch(classifier):
    queue = BatchQueue(classifier, max_batch_size=16, max_wait_ms=3000)
    queue.start()
    try:
        started = time.monotonic()
        asyncio.run(queue.submit(["just me"]))
        elapsed = time.monotonic() - started
    finally:
        queue.stop()
    assert elapsed < 1.5, f"a lone request waited {elapsed:.2f}s for company"


def test_under_concurrent_traffic_stragglers_join_the_batch(classifier):
    queue = BatchQueue(classifier, max_batch_size=16, max_wait_ms=3000)
    queue.start()

    async def run():
        await asyncio.gather(queue.submit(["a"]), queue.submit(["b"]))  # concurrent traffic seen
        batches = queue.batches_run
        first = asyncio.ensure_future(queue.submit(["c"]))
        await asyncio.sleep(0.3)  # arrives well inside max_wait
        await asyncio.gather(first, queue.submit(["d"]))
        return queue.batches_run - batches

    try:
        assert asyncio.run(run()) == 1
    finally:
        queue.stop()


class _BlockingClassifier:
    """Wraps a classifier so a test can hold the worker inside a forward pass."""

    def __init__(self, inner, fail: bool = False):
        self.inner, self.fail = inner, fail
        self.labels = inner.labels
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, texts):
        return self.inner.encode(texts)

    def predict_encoded(self, batch):
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("forward pass exploded")
        return self.inner.predict_encoded(batch)


def test_full_queue_says_overloaded_and_accepted_requests_finish(classifier):
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=4, max_wait_ms=0, max_queued_texts=6)
    queue.start()

    async def run():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)  # worker busy with `first`
        accepted = asyncio.create_task(queue.submit(["bad"] * 6))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue limit is 6"):
            await queue.submit(["fun"])
        blocking.release.set()
        return await first, await accepted

    try:
        first, accepted = asyncio.run(run())
    finally:
        queue.stop()
    np.testing.assert_allclose(first, classifier.predict(["great"]), atol=1e-5)
    np.testing.assert_allclose(accepted, classifier.predict(["bad"] * 6), atol=1e-5)
    assert queue.queued_texts == 0


def test_batch_failure_reaches_every_waiter(classifier):
    blocking = _BlockingClassifier(classifier, fail=True)
    queue = BatchQueue(blocking, max_batch_size=32, max_wait_ms=50)
    queue.start()

    async def run():
        tasks = [asyncio.create_task(queue.submit([w])) for w in ("a", "b", "c")]
        blocking.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(run())
    finally:
        queue.stop()
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert all("exploded" in str(r) for r in results)


def test_cancelled_caller_is_skipped(classifier):
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0)
    queue.start()

    async def run():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        doomed = asyncio.create_task(queue.submit(["bad"]))
        survivor = asyncio.create_task(queue.submit(["fun"]))
        await asyncio.sleep(0.01)
        doomed.cancel()
        blocking.release.set()
        return await first, await survivor

    try:
        _, survivor = asyncio.run(run())
    finally:
        queue.stop()
    np.testing.assert_allclose(survivor, classifier.predict(["fun"]), atol=1e-5)
    assert queue.batches_run == 2  # "bad" never ran
