"""Prompt selection (``selection``): which prompts' groups a step trains on.

:data:`SELECTIONS` is the table of rules (the config validates ``selection`` against it):

- ``none``: the step trains on the ``prompts_per_step`` prompts it draws;
- ``dapo``: DAPO's dynamic sampling (theory.selection.informative): after the rewards, groups
  whose rewards are all equal are dropped, and more prompts are drawn, rolled out and scored
  until ``prompts_per_step`` groups remain; the first ones in draw order are kept and the
  surplus is discarded (verl ``recipe/dapo/dapo_ray_trainer.py`` @ 246cac4, L268-288);
- ``greso``: GRESO's pre-rollout skip (theory.selection.GresoSkipper) and then DAPO's filter.

A step with a rule other than ``none`` runs in generation rounds. Each round draws prompts from
the run's sampler: ``prompts_per_step`` of them, or with ``greso`` as many draws of that size as
it takes to keep ``prompts_per_step`` after the skip (at most ``max_generation_rounds`` draws;
the unneeded rest of the last draw is passed over, neither rolled out nor recorded), so the
skipped prompts cost no rollouts. Every candidate gets n = C / prompts_per_step rollouts (the
uniform allocation, which these rules assume). After ``max_generation_rounds`` rounds with fewer
groups kept, the step stops with a :class:`SelectionError`, as verl raises a ValueError after
``max_num_gen_batches`` (L270-284): the run stops before the step trains, nothing of the step is
logged or saved, and the newest checkpoint is the step before. Training on a short batch, as
GRESO's last round may, would change the batch size the loss weights and learning rate were set
for; the default of 10 rounds is verl's ``run_dapo_qwen2.5_32b.sh`` (L27). verl draws
``gen_batch_size`` prompts per round (3x the training batch in that script, L29); here a round
draws ``prompts_per_step``: more rounds, no surplus rolled out.

GRESO's histories learn from every rolled-out group (GRESO records them before filtering, RT
1116-1132); its p_easy and p_hard adapt once per step from the fractions of all-correct and
all-wrong groups among all the step's rollouts, in each step in which a drawn prompt had a
history: GRESO adapts from its second epoch on (``epoch > 0``, RT 1207), and a drawn prompt has a
history only once the sampler is in its second pass. The rewards must be 0/1 (``binary``, or
``signed``, mapped back to 0/1 here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import checks
from theory.selection import GresoSkipper, informative
from trainer.registry import choose
from trainer.rewards import REWARD_CONVENTIONS


@dataclass(frozen=True)
class SelectionRule:
    """``filters_groups``: drop groups whose rewards are all equal and refill (DAPO);
    ``skips_prompts``: skip prompts before their rollouts by their history (GRESO; needs 0/1
    rewards)."""

    filters_groups: bool
    skips_prompts: bool
    summary: str


SELECTIONS = {
    "none": SelectionRule(False, False, "train on the prompts as drawn"),
    "dapo": SelectionRule(True, False, "DAPO dynamic sampling: drop all-equal groups, refill"),
    "greso": SelectionRule(True, True, "GRESO: skip prompts by their history, then DAPO's filter"),
}


class SelectionError(RuntimeError):
    """The step could not keep ``prompts_per_step`` groups within ``max_generation_rounds``."""


def success_means(groups, convention: str) -> np.ndarray:
    """Each group's mean success in [0, 1] from its rewards under ``convention`` (0/1 or +-1)."""
    scale = choose(REWARD_CONVENTIONS, convention, "reward_convention")
    low, high = scale(0.0), scale(1.0)
    groups = [checks.as_float_array(f"groups[{q}]", g) for q, g in enumerate(groups)]
    if any(g.size == 0 for g in groups):
        raise ValueError("groups must each hold at least one reward")
    return np.array([(g.mean() - low) / (high - low) for g in groups])


class PromptSelector:
    """Rank 0's side of a selection rule: which prompts a round rolls out (:meth:`candidates`),
    which groups the step keeps (:meth:`keep`), the step's counters and GRESO's skipper.

    ``batch`` groups are kept per step, each of ``group_size`` rollouts, over ``n_prompts``
    prompts; ``convention`` is the run's reward convention."""

    def __init__(self, name: str, n_prompts: int, batch: int, group_size: int, max_rounds: int, convention: str):
        self.name, self.rule = name, choose(SELECTIONS, name, "selection")
        self.batch, self.group_size, self.max_rounds, self.convention = batch, group_size, max_rounds, convention
        self.skipper = GresoSkipper(n_prompts) if self.rule.skips_prompts else None
        self.start()

    def start(self) -> None:
        """Reset the step's counters (before its first round)."""
        self.kept = self.rounds = self.generated = self.dropped = self.surplus = self.skipped = 0
        self.easy = self.hard = 0
        self.informed = False  # whether a prompt drawn in this step had a history (GRESO's epoch > 0)

    @property
    def full(self) -> bool:
        return self.kept >= self.batch

    def candidates(self, sampler, rng: np.random.Generator) -> np.ndarray:
        """The prompts of the next round, in draw order; a SelectionError when the step has had
        its ``max_rounds`` rounds."""
        if self.rounds >= self.max_rounds:
            raise SelectionError(
                f"selection={self.name}: {self.kept} of prompts_per_step = {self.batch} groups with unequal rewards "
                f"after max_generation_rounds = {self.max_rounds} rounds ({self.generated} rollouts, "
                f"{self.dropped} all-equal groups dropped); the prompts may be too hard or too easy for the policy: "
                "raise max_generation_rounds (an integer >= 1) or use selection=none"
            )
        self.rounds += 1
        if self.skipper is None:
            return sampler.next()
        chosen = []
        for _ in range(self.max_rounds):
            drawn = sampler.next()
            self.informed |= bool(self.skipper.seen(drawn).any())
            skip = self.skipper.skip(drawn, rng)
            need = self.batch - len(chosen)
            kept = np.flatnonzero(~skip)
            chosen += drawn[kept[:need]].tolist()
            tested = kept[need - 1] + 1 if kept.size >= need else drawn.size  # the draw up to the last one needed
            self.skipped += int(skip[:tested].sum())
            if len(chosen) == self.batch:
                break
        return np.asarray(chosen, dtype=np.int64)

    def keep(self, indices, groups) -> np.ndarray:
        """Positions (in ``indices``) of the round's groups the step keeps: the informative ones
        (all of them with ``none``), the first in draw order while the step needs them. Records
        the groups in GRESO's histories."""
        self.generated += sum(len(g) for g in groups)
        if self.skipper is not None:
            means = success_means(groups, self.convention)
            self.skipper.observe(indices, means)
            self.easy += int((means == 1.0).sum())
            self.hard += int((means == 0.0).sum())
        useful = informative(groups) if self.rule.filters_groups else np.ones(len(groups), dtype=bool)
        self.dropped += int((~useful).sum())
        positions = np.flatnonzero(useful)
        taken = positions[: self.batch - self.kept]
        self.surplus += positions.size - taken.size
        self.kept += taken.size
        return taken

    def finish(self) -> None:
        """GRESO's adaptation, when a candidate of the step had a history."""
        groups = self.generated // self.group_size
        if self.skipper is not None and self.informed:
            self.skipper.adapt(self.easy / groups, self.hard / groups)

    def metrics(self) -> dict:
        """The step's rounds, rollouts and groups (and GRESO's skips and probabilities, as
        :meth:`finish` adapted them)."""
        metrics = {
            "selection/rounds": self.rounds,
            "selection/rollouts_generated": self.generated,
            "selection/rollouts_trained": self.kept * self.group_size,
            "selection/groups_dropped": self.dropped,
            "selection/groups_surplus": self.surplus,
        }
        if self.skipper is not None:
            metrics |= {
                "selection/prompts_skipped": self.skipped,
                "selection/p_easy": self.skipper.p_easy,
                "selection/p_hard": self.skipper.p_hard,
            }
        return metrics

    def state_dict(self) -> dict:
        return {} if self.skipper is None else self.skipper.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.skipper is not None:
            self.skipper.load_state_dict(state)
