"""Registry of the checks behind the claims ledger.

Each topic module (``simulators.<topic>``) exposes ``CHECKS``, a list of
:class:`Check`. A check is one experiment that yields rows for one or more claim
ids (the ids of CLAIMS.md); one experiment may serve several claims
because they share draws (V1 and V2 come from the same rollouts).
A new topic is a module with ``CHECKS``: :data:`TOPICS` is every module of this package that
assigns ``CHECKS`` at module level, in alphabetical order.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import zlib
from pathlib import Path
from typing import Callable

import numpy as np


def _assigns(path: Path, name: str) -> bool:
    """Whether the module at ``path`` assigns ``name`` at module level. Read from the source:
    the topic modules import this registry, so finding them by importing would be circular."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


TOPICS = tuple(sorted(path.stem for path in Path(__file__).parent.glob("*.py") if _assigns(path, "CHECKS")))


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
