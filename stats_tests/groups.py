"""Grouped observations: validation and the exclusion rules shared by the four tests.

Input: one array per question (prompt), as a list of 1-D arrays (groups may differ in
size) or a 2-D array (one row per question). Decisions (VIP App. B is silent):

- NaN or infinite values raise ValueError naming the argument and the group;
- groups with fewer than MIN_GROUP_SIZE = 3 observations are excluded and counted:
  O'Brien's transform divides by (n - 1)(n - 2), and a Pearson correlation of two points
  is always +-1 with p-value 1, so such a group carries no evidence;
- for the correlation tests, groups in which the rewards or the norms are constant are
  excluded and counted (Pearson's r is undefined there): with binary rewards every
  question solved always or never is such a group;
- a test with too few groups left (2 for the variance tests, 1 for the correlation
  tests) raises ValueError; nothing returns a silent NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory import checks

MIN_GROUP_SIZE = 3


@dataclasses.dataclass(frozen=True)
class Exclusions:
    """How many groups a test left out, and why."""

    too_small: int = 0
    constant: int = 0

    @property
    def total(self) -> int:
        return self.too_small + self.constant


def as_groups(name: str, data) -> list[np.ndarray]:
    """``data`` as a list of finite 1-D float arrays (one per question)."""
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (questions x rollouts) or a list of 1-D arrays; got shape {data.shape}"
            )
        data = checks.real_array(name, data)
        if not np.all(np.isfinite(data)):
            q = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
            raise ValueError(f"{name}[{q}] must be finite; got a NaN or infinite value")
        groups = list(data)
    else:
        groups = [checks.real_array(f"{name}[{q}]", row) for q, row in enumerate(data)]
        for q, arr in enumerate(groups):
            if arr.ndim != 1:
                raise ValueError(f"{name}[{q}] must be 1-D; got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}[{q}] must be finite; got a NaN or infinite value")
    if not groups:
        raise ValueError(f"{name} must hold at least one group; got none")
    return groups


def by_size(groups: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices, stacked rows) for each distinct group size: lets per-group statistics run
    as one vectorised call per size (one call in all when every group has n rollouts)."""
    sizes = np.array([g.size for g in groups])
    return [(idx, np.stack([groups[i] for i in idx])) for idx in (np.flatnonzero(sizes == n) for n in np.unique(sizes))]


def paired_groups(rewards, norms) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rewards and norms as matching groups (same number of groups, same sizes)."""
    r, z = as_groups("rewards", rewards), as_groups("norms", norms)
    if len(r) != len(z):
        raise ValueError(f"rewards and norms must have the same number of groups; got {len(r)} and {len(z)}")
    for q, (x, y) in enumerate(zip(r, z)):
        if x.size != y.size:
            raise ValueError(f"rewards[{q}] and norms[{q}] must have the same size; got {x.size} and {y.size}")
    return r, z


def usable_pairs(rewards, norms) -> tuple[list[np.ndarray], list[np.ndarray], Exclusions]:
    """The groups a correlation test can use, and the count of those it cannot."""
    r, z = paired_groups(rewards, norms)
    sizes = np.array([x.size for x in r])
    flat = np.zeros(sizes.size, dtype=bool)
    for idx, rows in by_size(r):
        flat[idx] |= np.ptp(rows, axis=1) == 0
    for idx, rows in by_size(z):
        flat[idx] |= np.ptp(rows, axis=1) == 0
    small_mask = sizes < MIN_GROUP_SIZE
    keep = ~small_mask & ~flat
    small, constant = int(small_mask.sum()), int((~small_mask & flat).sum())
    keep_r = [x for x, k in zip(r, keep) if k]
    keep_z = [y for y, k in zip(z, keep) if k]
    if not keep_r:
        raise ValueError(
            f"rewards/norms: no usable group (need size >= {MIN_GROUP_SIZE} and non-constant rewards and norms; "
            f"{small} too small, {constant} constant)"
        )
    return keep_r, keep_z, Exclusions(too_small=small, constant=constant)


def usable_groups(name: str, data) -> tuple[list[np.ndarray], Exclusions]:
    """The groups a variance test can use (size >= 3); at least two are needed."""
    groups = as_groups(name, data)
    keep = [g for g in groups if g.size >= MIN_GROUP_SIZE]
    if len(keep) < 2:
        raise ValueError(f"{name} must hold at least 2 groups of size >= {MIN_GROUP_SIZE}; got {len(keep)}")
    return keep, Exclusions(too_small=len(groups) - len(keep))
