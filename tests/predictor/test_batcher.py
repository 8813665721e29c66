"""Unit tests of the batching queue and its scheduler on a tiny random model."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time

import numpy as np
import pytest

from harness.tiny_model import WORDS, build_tiny_model
from predictor.batcher import INLINE_TOKENIZE_CHARS, BatchQueue
from predictor.classifier import SentimentClassifier
from predictor.scheduler import MAX_SKIPPED_PASSES
from serving.errors import Overloaded, TooLarge, Unavailable


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return SentimentClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def _texts(rng: random.Random, n: int, words: tuple[int, int] = (1, 30)) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(*words))) for _ in range(n)]


async def _until(condition, what: str, timeout: float = 10.0) -> None:
    """Poll `condition` on the event loop until it holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("workers", [1, 3])
def test_concurrent_callers_get_exactly_their_own_rows(classifier, workers):
    rng = random.Random(7)
    requests = [_texts(rng, rng.randint(1, 5)) for _ in range(60)]
    queue = BatchQueue(classifier, max_batch_size=16, max_wait_ms=5, workers=workers)
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
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=16, max_wait_ms=3000)

    async def run():
        first = asyncio.create_task(queue.submit(["a"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        second = asyncio.create_task(queue.submit(["b"]))  # arrives while "a" runs: concurrent traffic
        await _until(lambda: queue.queued_texts == 1, "b is queued")
        blocking.release.set()
        await asyncio.gather(first, second)
        batches, taken = queue.batches_run, queue.jobs_taken
        third = asyncio.create_task(queue.submit(["fun"]))
        await _until(lambda: queue.jobs_taken == taken + 1, "the worker holds it")  # and waits for company
        await asyncio.gather(third, queue.submit(["bad"]))
        return queue.batches_run - batches

    assert _run_with(queue, run) == 1
    assert blocking.passes[-1] == ["fun", "bad"]


class _BlockingClassifier:
    """Wraps a classifier so a test can hold the worker inside a forward pass.

    Records every pass as the texts in it (decoded back from their token ids) and its padded width.
    """

    def __init__(self, inner, fail: bool = False, hold: bool = True, fail_on: str | None = None):
        self.inner, self.fail, self.fail_on = inner, fail, fail_on
        self.labels, self.max_length = inner.labels, inner.max_length
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        self.passes: list[list[str]] = []
        self.widths: list[int] = []
        self.vocab = inner.model.encoder(inner.max_length)  # to read each pass's texts back

    def encode(self, texts):
        return self.inner.encode(texts)

    def predict_encoded(self, batch):
        texts = [self.vocab.decode(e.ids, skip_special_tokens=True) for e in batch]
        self.passes.append(texts)
        self.widths.append(max(len(e.ids) for e in batch))
        self.entered.set()
        self.release.wait(10)
        if self.fail or (self.fail_on is not None and any(self.fail_on in t for t in texts)):
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
        await _until(lambda: queue.queued_texts == 6, "the six texts are queued")
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
        await _until(lambda: queue.queued_texts == 2, "both requests are queued")
        doomed.cancel()
        blocking.release.set()
        return await first, await survivor

    try:
        _, survivor = asyncio.run(run())
    finally:
        queue.stop()
    np.testing.assert_allclose(survivor, classifier.predict(["fun"]), atol=1e-5)
    assert queue.batches_run == 2  # "bad" never ran


# --- token budget and fair scheduling ------------------------------------------------------------

def _words(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def _run_with(queue: BatchQueue, scenario):
    queue.start()
    try:
        return asyncio.run(scenario())
    finally:
        queue.stop()


def test_request_over_the_token_budget_is_too_large(classifier):
    queue = BatchQueue(classifier, max_request_tokens=100, max_queued_tokens=100)

    async def scenario():
        with pytest.raises(TooLarge) as err:
            await queue.submit([_words(80), _words(70)])  # each truncated to the tiny model's 64
        at_limit = await queue.submit([_words(80), _words(34)])  # 64 + 36 tokens: exactly the budget
        return err.value, at_limit

    error, at_limit = _run_with(queue, scenario)
    assert error.message == "request has 128 tokens after truncation to 64 per text; the limit is 100"
    assert error.http_status == 413
    np.testing.assert_allclose(at_limit, classifier.predict([_words(80), _words(34)]), atol=1e-5)
    assert queue.queued_texts == 0 and queue.queued_tokens == 0


def test_queue_is_bounded_in_tokens(classifier):
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=4, max_wait_ms=0, max_request_tokens=100, max_queued_tokens=100)

    async def scenario():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)  # the worker is busy with `first`
        accepted = asyncio.create_task(queue.submit([_words(58)]))  # 60 tokens
        await _until(lambda: queue.queued_tokens == 60, "60 tokens are queued")
        with pytest.raises(Overloaded) as err:
            await queue.submit([_words(39), "fun"])  # 41 + 3 more would pass 100
        assert queue.queued_tokens == 60
        blocking.release.set()
        return err.value, await first, await accepted

    error, _, accepted = _run_with(queue, scenario)
    assert error.message == "server busy: 60 tokens queued, the queue limit is 100 tokens; retry later"
    assert error.headers == {"Retry-After": "1"}
    np.testing.assert_allclose(accepted, classifier.predict([_words(58)]), atol=1e-5)
    assert queue.queued_tokens == 0


def test_queue_must_hold_a_request_at_the_budget(classifier):
    with pytest.raises(ValueError, match="max_queued_tokens"):
        BatchQueue(classifier, max_request_tokens=200, max_queued_tokens=100)


def test_passes_are_capped_by_padded_tokens_and_texts(classifier):
    recording = _BlockingClassifier(classifier, hold=False)
    texts = _texts(random.Random(5), 60, words=(1, 62))
    queue = BatchQueue(recording, max_batch_size=8, max_wait_ms=0, max_batch_tokens=128)
    probs = _run_with(queue, lambda: queue.submit(texts))
    np.testing.assert_allclose(probs, np.concatenate([classifier.predict([t]) for t in texts]), atol=1e-5)
    for rows, width in zip(recording.passes, recording.widths, strict=True):
        assert len(rows) <= 8
        assert len(rows) * width <= 128 or len(rows) == 1
    assert sorted(t for rows in recording.passes for t in rows) == sorted(texts)


def test_short_request_overtakes_a_large_one(classifier):
    """A short request sent while a large one runs goes in the very next pass, alone (no padding)."""
    blocking = _BlockingClassifier(classifier)
    large = [_words(60 + i % 3) for i in range(40)]  # ~63 tokens each: 2 per pass of 128 tokens
    # The tiny model's texts are at most 64 tokens: a smaller padding slack shows the rule.
    queue = BatchQueue(blocking, max_batch_size=32, max_wait_ms=0, max_batch_tokens=128, pad_slack_tokens=16)

    async def scenario():
        big = asyncio.create_task(queue.submit(large))
        await asyncio.to_thread(blocking.entered.wait, 5)  # the large request's first pass is running
        short = asyncio.create_task(queue.submit(["great fun"]))
        await _until(lambda: queue.queued_texts == len(large) - 2 + 1, "the short request is queued")
        blocking.release.set()
        return await big, await short

    big, short = _run_with(queue, scenario)
    assert blocking.passes[1] == ["great fun"]
    assert len(blocking.passes) == 20 + 1
    np.testing.assert_allclose(short, classifier.predict(["great fun"]), atol=1e-5)
    np.testing.assert_allclose(big, np.concatenate([classifier.predict([t]) for t in large]), atol=1e-5)


def test_large_requests_take_turns(classifier):
    blocking = _BlockingClassifier(classifier)
    a = [f"great {_words(60)}"] * 8
    b = [f"bad {_words(60)}"] * 8
    queue = BatchQueue(blocking, max_batch_size=32, max_wait_ms=0, max_batch_tokens=128)

    async def scenario():
        first = asyncio.create_task(queue.submit(["fun"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        tasks = [asyncio.create_task(queue.submit(texts)) for texts in (a, b)]
        await _until(lambda: queue.queued_texts == 16, "both large requests are queued")
        blocking.release.set()
        return await first, *(await asyncio.gather(*tasks))

    _, probs_a, probs_b = _run_with(queue, scenario)
    owners = ["a" if rows[0].startswith("great") else "b" for rows in blocking.passes[1:]]
    assert sorted(owners) == ["a"] * 4 + ["b"] * 4  # two texts per pass
    assert all(x != y for x, y in itertools.pairwise(owners))  # taking turns
    np.testing.assert_allclose(probs_a, classifier.predict(a), atol=1e-5)
    np.testing.assert_allclose(probs_b, classifier.predict(b), atol=1e-5)


def test_large_request_is_not_starved_by_short_ones(classifier):
    blocking = _BlockingClassifier(classifier)
    large = [_words(40)] * 6
    shorts = [[f"fun {WORDS[i % len(WORDS)]}"] for i in range(30)]
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0)

    async def scenario():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        big = asyncio.create_task(queue.submit(large))
        await _until(lambda: queue.queued_texts == len(large), "the large request is queued")
        tasks = [asyncio.create_task(queue.submit(texts)) for texts in shorts]  # all younger than it
        await _until(lambda: queue.queued_texts == len(large) + len(shorts), "everything is queued")
        blocking.release.set()
        await asyncio.gather(first, *tasks)
        return await big

    probs = _run_with(queue, scenario)
    np.testing.assert_allclose(probs, classifier.predict(large), atol=1e-5)
    large_passes = [i for i, rows in enumerate(blocking.passes) if rows == [_words(40)]]
    # Younger short requests overtake it, but it gets a pass at least every MAX_SKIPPED_PASSES + 1.
    assert large_passes[0] == 1 + MAX_SKIPPED_PASSES
    assert all(b - a == MAX_SKIPPED_PASSES + 1 for a, b in itertools.pairwise(large_passes))
    assert large_passes[-1] < len(blocking.passes) - 1  # finished while short requests were waiting


def test_failing_pass_fails_only_the_requests_in_it(classifier):
    """Every request with a text in a failed pass fails (its other texts dropped); the rest succeed."""
    blocking = _BlockingClassifier(classifier, fail_on="hate")
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0)

    async def scenario():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        tasks = [asyncio.create_task(queue.submit(texts))
                 for texts in (["the film was great fun", "hate", "the plot was boring"], ["fun"], ["i hate"])]
        await _until(lambda: queue.queued_texts == 5, "everything is queued")
        blocking.release.set()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    first, mixed, fun, hate = _run_with(queue, scenario)
    assert isinstance(mixed, RuntimeError) and isinstance(hate, RuntimeError)
    np.testing.assert_allclose(fun, classifier.predict(["fun"]), atol=1e-5)
    np.testing.assert_allclose(first, classifier.predict(["great"]), atol=1e-5)
    ran = [text for rows in blocking.passes for text in rows]
    assert "hate" in ran and "the plot was boring" not in ran  # dropped after the failure
    assert queue.queued_texts == 0 and queue.queued_tokens == 0


def test_failing_pass_fails_every_request_sharing_it(classifier):
    blocking = _BlockingClassifier(classifier, fail_on="hate")
    queue = BatchQueue(blocking, max_batch_size=32, max_wait_ms=0)

    async def scenario():
        first = asyncio.create_task(queue.submit(["great"]))
        await asyncio.to_thread(blocking.entered.wait, 5)
        tasks = [asyncio.create_task(queue.submit(texts)) for texts in (["i hate"], ["i love"])]
        await _until(lambda: queue.queued_texts == 2, "both are queued")
        blocking.release.set()
        return await first, await asyncio.gather(*tasks, return_exceptions=True)

    first, results = _run_with(queue, scenario)
    np.testing.assert_allclose(first, classifier.predict(["great"]), atol=1e-5)
    assert blocking.passes[1] == ["i hate", "i love"]
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]


def test_cancelled_large_request_stops_using_the_model(classifier):
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=2, max_wait_ms=0)

    async def scenario():
        big = asyncio.create_task(queue.submit(["great fun"] * 40))
        await asyncio.to_thread(blocking.entered.wait, 5)
        big.cancel()
        blocking.release.set()
        await _until(lambda: queue.queued_texts == 0, "the cancelled request's texts are dropped")
        return await queue.submit(["bad"])  # the worker is free again

    probs = _run_with(queue, scenario)
    np.testing.assert_allclose(probs, classifier.predict(["bad"]), atol=1e-5)
    assert len(blocking.passes) <= 3 and blocking.passes[-1] == ["bad"]


# --- passes in parallel (workers) -----------------------------------------------------------------

def test_two_workers_compute_two_passes_at_once(classifier):
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0, workers=2)

    async def scenario():
        tasks = [asyncio.create_task(queue.submit([text])) for text in ("great", "awful", "fine")]
        await _until(lambda: len(blocking.passes) == 2, "both workers are inside a pass")
        await asyncio.sleep(0.05)
        assert len(blocking.passes) == 2 and queue.queued_texts == 1  # the third waits for a free worker
        blocking.release.set()
        return await asyncio.gather(*tasks)

    results = _run_with(queue, scenario)
    for text, probs in zip(("great", "awful", "fine"), results, strict=True):
        np.testing.assert_allclose(probs, classifier.predict([text]), atol=1e-5)


def test_request_split_across_workers_gets_its_rows_in_order(classifier):
    texts = _texts(random.Random(3), 50)
    queue = BatchQueue(classifier, max_batch_size=4, max_wait_ms=0, workers=2)
    probs = _run_with(queue, lambda: queue.submit(texts))
    np.testing.assert_allclose(probs, np.concatenate([classifier.predict([t]) for t in texts]), atol=1e-5)
    assert queue.batches_run == 13


def test_failure_in_one_of_two_passes_in_flight_fails_the_request_once(classifier):
    blocking = _BlockingClassifier(classifier, fail_on="hate")
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0, workers=2)

    async def scenario():
        doomed = asyncio.create_task(queue.submit(["i hate it", "fine"]))
        await _until(lambda: len(blocking.passes) == 2, "both of its texts are being computed")
        blocking.release.set()
        failure = await asyncio.gather(doomed, return_exceptions=True)
        return failure[0], await queue.submit(["great"])  # the other pass finished quietly

    failure, probs = _run_with(queue, scenario)
    assert isinstance(failure, RuntimeError)
    np.testing.assert_allclose(probs, classifier.predict(["great"]), atol=1e-5)
    assert queue.queued_texts == 0 and queue.queued_tokens == 0


def test_stop_answers_every_waiting_request(classifier):
    """`stop` returns at once, on the event loop, and every accepted request still gets its real answer."""
    blocking = _BlockingClassifier(classifier)
    queue = BatchQueue(blocking, max_batch_size=1, max_wait_ms=0, workers=2)
    queue.start()
    texts = ("a", "b", "c", "d")

    async def scenario():
        tasks = [asyncio.create_task(queue.submit([text])) for text in texts]
        await _until(lambda: len(blocking.passes) == 2 and queue.queued_texts == 2, "two running, two queued")
        queue.stop()  # as KServe calls it: on the event loop, while both workers are inside a pass
        held = len(blocking.passes) == 2 and not blocking.release.is_set()
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(queue.submit(["too late"]), 10)  # a job queued for no worker: never answered
        blocking.release.set()
        return held, await asyncio.gather(*tasks, return_exceptions=True)

    held, results = asyncio.run(scenario())
    assert held
    for text, probs in zip(texts, results, strict=True):
        assert isinstance(probs, np.ndarray), probs
        np.testing.assert_allclose(probs, classifier.predict([text]), atol=1e-5)
    assert queue.join(timeout=10)  # then the workers end
    assert queue.queued_texts == 0 and queue.queued_tokens == 0


class _GatedEncoder:
    """Wraps a classifier so a test can hold a caller inside tokenization (which runs in a thread for long
    requests) and count the requests tokenized."""

    def __init__(self, inner):
        self.inner = inner
        self.labels, self.max_length = inner.labels, inner.max_length
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:
            self.entered.set()
            self.release.wait(10)
        return self.inner.encode(texts)

    def predict_encoded(self, batch):
        return self.inner.predict_encoded(batch)


def test_request_tokenizing_when_stop_begins_is_refused_not_lost(classifier):
    """The race of a scale-down: a request still tokenizing when `stop` runs gets 503, never silence."""
    gated = _GatedEncoder(classifier)
    queue = BatchQueue(gated, max_wait_ms=0)
    queue.start()
    long_texts = [_words(60)] * 20  # over INLINE_TOKENIZE_CHARS: tokenized in a thread

    async def scenario():
        late = asyncio.create_task(queue.submit(long_texts))
        await asyncio.to_thread(gated.entered.wait, 5)
        queue.stop()
        gated.release.set()
        with pytest.raises(Unavailable) as err:
            await asyncio.wait_for(late, 10)  # a job queued for no worker would never be answered
        calls = gated.calls
        with pytest.raises(Unavailable):
            await asyncio.wait_for(queue.submit(["after the stop"]), 10)
        return err.value, gated.calls - calls

    error, tokenized = asyncio.run(scenario())
    assert error.message == "the predictor is shutting down; retry"
    assert error.http_status == 503
    assert tokenized == 0  # refused before any work
    assert queue.join(timeout=10)
    assert queue.queued_texts == 0 and queue.queued_tokens == 0
