"""The GLUE SST-2 sentences in the shared directory (column `sentence`, `label` 1 = positive)."""

from __future__ import annotations

import csv
import itertools

import numpy as np

from harness.processes import SHARED


def _rows(name: str, limit: int | None = None) -> list[dict]:
    with (SHARED / "data" / "sst2" / name).open() as f:
        return list(itertools.islice(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), limit))


def dev_set() -> tuple[list[str], np.ndarray]:
    """The 872 dev sentences and their labels."""
    rows = _rows("dev.tsv")
    return [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])


def sentences(name: str, limit: int) -> list[str]:
    """The first `limit` sentences of `name` (`dev.tsv`, `train.tsv`): realistic texts for load."""
    return [r["sentence"] for r in _rows(name, limit)]
