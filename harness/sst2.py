"""The GLUE SST-2 sentences in the shared directory (column `sentence`, `label` 1 = positive)."""

from __future__ import annotations

import csv

import numpy as np

from harness.processes import SHARED


def dev_set() -> tuple[list[str], np.ndarray]:
    """The 872 dev sentences and their labels."""
    with (SHARED / "data" / "sst2" / "dev.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])
