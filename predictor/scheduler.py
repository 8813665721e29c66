"""Which texts go into the next forward pass: a pure function of the requests in progress.

The policy, all of it here (`workers` carries it out and decides nothing):

- A pass holds at most `Budget.max_texts` texts and `Budget.max_tokens` padded tokens (texts x
  the longest of them), so a large request runs as many short passes and other requests' passes
  run between them.
- Requests are served least-served first (fewest tokens computed so far), then those needing
  fewer passes, then those with fewer tokens by steps of `SIZE_CLASS_TOKENS`, then first come
  first served: a new short request leads the next pass while a large or long one is under way,
  large requests take turns, and sentences of similar size keep their order.
- A request that younger requests overtook in `MAX_SKIPPED_PASSES` passes in a row goes first,
  so none is starved.
- Each request's texts go shortest first, and a text joins a pass if the pass's longest text stays
  within 2x of its shortest, or the text adds at most `Budget.pad_slack_tokens` of padding, so short
  texts never ride, padded, in a pass of long ones (nor in a pass that grew, text by text, long).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_SKIPPED_PASSES = 4
"""A request overtaken by younger requests in this many passes in a row leads the next one."""
PAD_SLACK_TOKENS = 16
"""Most padding a text of a very different length (over 2x) may add to a pass it joins; beyond
that it waits for a pass of its own length.

A pass costs about its padded tokens plus a fixed cost worth 15-25 tokens (MiniLM and DistilBERT on
ONNX Runtime, 2 cores), so a text that adds less padding than that costs less in a pass than in one
of its own. More slack wastes compute under load: with 64, a 5-token text and a 60-token one shared
a pass, the short one padded to 60 (`python -m bench.triton` reports the padding share of each
side's passes)."""
SIZE_CLASS_TOKENS = 128
"""Requests within the same step of this many tokens are served first come first served, so a
slightly longer sentence is not overtaken by shorter ones; a 300-token text waits behind them."""


@dataclass(frozen=True)
class Budget:
    """What one forward pass may hold."""

    max_texts: int
    max_tokens: int
    """Padded tokens: texts x the longest of them (a single longer text still gets a pass of its own)."""
    pad_slack_tokens: int = PAD_SLACK_TOKENS


@dataclass(eq=False)
class Request:
    """A request in progress, as the scheduler sees it."""

    seq: int
    """Arrival order: a lower number arrived earlier."""
    lengths: list[int]
    """Tokens of each text not yet in a pass; kept shortest first."""
    served_tokens: int = 0
    skipped_passes: int = 0
    pending_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = sorted(self.lengths)
        self.pending_tokens = sum(self.lengths)


@dataclass(frozen=True)
class Pass:
    """The next forward pass."""

    takes: tuple[tuple[int, int], ...]
    """(index of a request in `pending`, how many of its shortest pending texts), in pass order."""
    width: int
    """The longest text in the pass: every text is padded to it."""
    overtaken: tuple[int, ...]
    """Requests left out of this pass although a request younger than them is in it."""

    @property
    def texts(self) -> int:
        return sum(count for _, count in self.takes)


def next_pass(pending: Sequence[Request], budget: Budget) -> Pass:
    """The texts of the next forward pass: empty only when no request has a text left."""
    order = sorted((i for i, r in enumerate(pending) if r.lengths), key=lambda i: _priority(pending[i], budget))
    takes: list[tuple[int, int]] = []
    texts = width = shortest = 0
    for i in order:
        if texts >= budget.max_texts or (texts + 1) * width > budget.max_tokens:
            break
        taken = 0
        for length in pending[i].lengths:
            if texts >= budget.max_texts or (texts and not _fits(texts, width, shortest, length, budget)):
                break
            taken += 1
            texts += 1
            shortest = min(shortest, length) if width else length
            width = max(width, length)
        if taken:
            takes.append((i, taken))
    served = {i for i, _ in takes}
    youngest = max((pending[i].seq for i in served), default=-1)
    overtaken = tuple(i for i, r in enumerate(pending) if i not in served and r.lengths and r.seq < youngest)
    return Pass(tuple(takes), width, overtaken)


def take(pending: Sequence[Request], chosen: Pass) -> None:
    """Record that `chosen` was started: its texts leave their requests, who was served, who overtaken."""
    for i, count in chosen.takes:
        request = pending[i]
        tokens = sum(request.lengths[:count])
        del request.lengths[:count]
        request.pending_tokens -= tokens
        request.served_tokens += tokens
        request.skipped_passes = 0
    for i in chosen.overtaken:
        pending[i].skipped_passes += 1


def is_full(pending: Sequence[Request], budget: Budget) -> bool:
    """Whether the pending texts fill a pass already, so there is no point waiting for more."""
    return (sum(len(r.lengths) for r in pending) >= budget.max_texts
            or sum(r.pending_tokens for r in pending) >= budget.max_tokens)


def _priority(request: Request, budget: Budget) -> tuple:
    """Overtaken too often first (oldest first); then least served, fewest passes left, smaller size
    class, oldest."""
    if request.skipped_passes >= MAX_SKIPPED_PASSES:
        return (0, request.seq, 0, 0, 0)
    passes_left = max(-(-request.pending_tokens // budget.max_tokens), -(-len(request.lengths) // budget.max_texts))
    return (1, request.served_tokens, passes_left, request.pending_tokens // SIZE_CLASS_TOKENS, request.seq)


def _fits(count: int, width: int, shortest: int, length: int, budget: Budget) -> bool:
    """Whether a text of `length` tokens may join a pass of `count` texts from `shortest` to `width` tokens."""
    if (count + 1) * max(width, length) > budget.max_tokens:
        return False
    if max(width, length) <= 2 * min(shortest, length):  # similar lengths: batching wins
        return True
    padding = count * (length - width) if length > width else width - length
    return padding <= budget.pad_slack_tokens
