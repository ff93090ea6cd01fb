"""Registry of the checks behind the claims ledger.

Each topic module (``simulators.<topic>``) exposes ``CHECKS``, a list of
:class:`Check`. A check is one experiment that yields rows for one or more claim
ids (the ids of CLAIMS.md); one experiment may serve several claims
because they share draws (V1 and V2 come from the same rollouts).
A new topic is a module with ``CHECKS`` and its name in ``TOPICS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import zlib
from typing import Callable

import numpy as np

TOPICS = ("variance", "allocation", "stats_calibration", "importance", "predictor", "allocation_peers", "bounds")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every check receives: quick or full mode, and whether to show progress."""

    full: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    claims: tuple[str, ...]
    run: Callable  # (RunConfig, numpy.random.Generator) -> list[ClaimResult]
    description: str = ""


def checks_for(topics=TOPICS) -> list[tuple[str, Check]]:
    """(topic, check) pairs of the given topics, in registry order."""
    pairs = []
    for topic in topics:
        if topic not in TOPICS:
            raise ValueError(f"topic must be one of {', '.join(TOPICS)}; got {topic!r}")
        module = importlib.import_module(f"simulators.{topic}")
        pairs.extend((topic, check) for check in module.CHECKS)
    return pairs


def check_rng(seed: int, check_name: str) -> np.random.Generator:
    """The generator of one check: a function of the run seed and the check's name only,
    so ``--only`` reproduces exactly the rows of a full run with the same seed."""
    return np.random.default_rng([seed, zlib.crc32(check_name.encode())])
