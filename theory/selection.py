"""Prompt selection: which prompts' groups a step trains on, at the price of extra rollouts.

Two rules of the literature, as their released code computes them (they are not allocation
rules: every rolled-out prompt gets the same n; they decide which groups enter the batch).

DAPO's dynamic sampling (arXiv 2503.14476 §3.2, eq. 11: keep a group only when
0 < #correct < G). :func:`informative` is the filter of verl's ``recipe/dapo/dapo_ray_trainer.py``
(volcengine/verl @ 246cac4ca6b0e3ce1009bc48aaa798689e0600af, L244-259): a group is kept when
its rewards are not all equal, and a group of one reward is kept. verl tests ``np.std(values) > 0``,
which is not exact for floats (``np.std([0.1] * 3)`` is 1.4e-17, so an all-equal group of 0.1s
passes); here the test is ``max > min``, which is what ``std > 0`` means and what GRESO's
``filter_zero_advantage`` computes (Infini-AI-Lab/GRESO @ b27784315479921ea1977178d7e6c4858b2ae5a1,
``verl/trainer/ttis/ttis.py`` L24-29). The refill loop around it lives in the trainer.

GRESO's pre-rollout skipping (arXiv 2506.02177), strategy ``all_probabilistic``:
:class:`GresoSkipper`. Citations below are to Infini-AI-Lab/GRESO @ b277843 (the commit above):
``presampling_selector.py`` (PS) and ``ray_trainer.py`` (RT), both under ``verl/trainer``. That
repository has no licence; this module is written from the behaviour described, not copied.
"""

from __future__ import annotations

import numpy as np

from theory import checks

# GRESO's constants, named for what they do.
KEEP_FLOOR = 0.01  # the keep probability never drops below this: skip = 1 - max(p^z, 0.01) (PS 117, 142)
P_START = 0.5  # p_easy = p_hard = 0.5 at the start (data.p_easy / data.p_hard, train-scripts/*_greso.sh L19-20)
P_STEP = 0.01  # the change of p_easy and p_hard per training step (RT 1212-1219)
P_MIN, P_MAX = 0.05, 0.95  # their bounds (data.min_p / data.max_p defaults, RT 1203-1204)
TARGET_ZERO_VARIANCE = 0.25  # data.target_zero_variance (RT 298-299; the scripts' value, L21)
TARGET_EASY = TARGET_ZERO_VARIANCE / 3  # share of all-correct groups aimed at (RT 298)
TARGET_HARD = TARGET_ZERO_VARIANCE * 2 / 3  # share of all-wrong groups aimed at (RT 299)


def informative(groups) -> np.ndarray:
    """DAPO's dynamic-sampling mask: True for each group (a 1-D array of rewards; sizes may
    differ) whose rewards are not all equal, or which holds a single reward (see the module
    docstring). Empty groups and non-finite rewards are refused."""
    mask = np.empty(len(groups), dtype=bool)
    for g, rewards in enumerate(groups):
        rewards = checks.as_float_array(f"groups[{g}]", rewards)
        if rewards.ndim != 1 or rewards.size == 0:
            raise ValueError(f"groups[{g}] must be a 1-D array of at least one reward; got shape {rewards.shape}")
        mask[g] = rewards.size == 1 or rewards.max() > rewards.min()
    return mask


class GresoSkipper:
    """GRESO's probabilistic pre-rollout skip (``all_probabilistic``) over ``n_prompts`` prompts.

    History: each time a prompt is rolled out, :meth:`observe` takes the mean of its group's
    success indicators (0/1 rewards, so the mean lies in [0, 1]). GRESO appends every rolled-out
    group's mean reward (RT 1116-1132) and reads only the trailing run of easy or of hard means,
    so the state kept here is that run: its kind and its length z per prompt, plus the number of
    times each prompt was rolled out.

    Easy and hard. GRESO's rewards are 1 (correct), 0.1 (boxed but wrong) and 0 (no box)
    (``verl/utils/reward_score/latex_math.py`` L85-116) with groups of 8: a mean >= 0.98 (PS 112)
    means all 8 correct, a mean <= 0.11 (PS 131, 137) means none correct (one correct answer
    already gives 0.125). With 0/1 rewards these are mean == 1 (easy) and mean == 0 (hard),
    whatever the group size.

    Skip rule (:meth:`skip_probability`): a prompt never rolled out is kept. Easy is tested first:
    with z the trailing run of easy groups, skip with 1 - max(p_easy^z, 0.01) (PS 102-122); when
    the last group was hard, with z its trailing run of hard groups, skip with
    1 - max(p_hard^z, 0.01) (PS 124-147). At most one of the two runs is non-empty (the last
    group is either easy or hard), so :meth:`skip` draws one uniform number per prompt; GRESO
    draws one for the easy test of every prompt with a history and another for the hard test,
    which gives the same skip probabilities.

    Adaptation (:meth:`adapt`, RT 1199-1219): once per training step, with the fractions of the
    step's rolled-out groups (all rounds) that were all correct and all wrong: each p moves by
    0.01 down (skip more) when its fraction reached its target (TARGET_EASY, TARGET_HARD) and up
    otherwise, within [0.05, 0.95]. GRESO counts a group as hard for this only when all its
    rewards are 0.1 (``metric_utils.py`` L205), i.e. wrong but formatted; 0/1 rewards make no
    such distinction, so here all wrong is hard. GRESO adapts only from its second epoch on
    (``epoch > 0``, RT 1207): the caller decides when to call :meth:`adapt`.
    """

    def __init__(self, n_prompts: int, p_easy: float = P_START, p_hard: float = P_START):
        if int(n_prompts) != n_prompts or n_prompts < 1:
            raise ValueError(f"n_prompts must be an integer >= 1; got {n_prompts}")
        for name, p in (("p_easy", p_easy), ("p_hard", p_hard)):
            if not P_MIN <= p <= P_MAX:
                raise ValueError(f"{name} must lie in [{P_MIN}, {P_MAX}]; got {p}")
        self.p_easy, self.p_hard = float(p_easy), float(p_hard)
        self.visits = np.zeros(int(n_prompts), dtype=np.int64)  # rollouts of each prompt so far
        self.easy_run = np.zeros(int(n_prompts), dtype=np.int64)  # trailing run of all-correct groups
        self.hard_run = np.zeros(int(n_prompts), dtype=np.int64)  # trailing run of all-wrong groups

    def _indices(self, indices) -> np.ndarray:
        arr = np.asarray(indices)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D array of prompt indices; got {arr!r:.100}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.visits.size):
            raise ValueError(
                f"indices must lie in [0, {self.visits.size - 1}]; got values in [{arr.min()}, {arr.max()}]"
            )
        return arr.astype(np.int64)

    def seen(self, indices) -> np.ndarray:
        """Whether each prompt has been rolled out before (has a history)."""
        return self.visits[self._indices(indices)] > 0

    def skip_probability(self, indices) -> np.ndarray:
        """1 - max(p^z, 0.01) per prompt, with (p, z) = (p_easy, its easy run) when that run is
        non-empty, else (p_hard, its hard run); 0 when both runs are empty (see the class)."""
        i = self._indices(indices)
        easy, run = self.easy_run[i] > 0, self.easy_run[i] + self.hard_run[i]  # one of the two runs is 0
        p = np.where(easy, self.p_easy, self.p_hard)
        return np.where(run > 0, 1.0 - np.maximum(p ** run.astype(float), KEEP_FLOOR), 0.0)

    def skip(self, indices, rng: np.random.Generator) -> np.ndarray:
        """A boolean mask, True for each prompt skipped this time: one uniform draw from ``rng``
        per prompt, skipped when it falls below :meth:`skip_probability`."""
        probability = self.skip_probability(indices)
        return rng.random(probability.size) < probability

    def observe(self, indices, group_means) -> None:
        """Append one rolled-out group per prompt: ``group_means[k]`` is the mean success (in
        [0, 1]) of prompt ``indices[k]``'s group; a prompt may appear more than once (in order)."""
        i = self._indices(indices)
        means = checks.probability("group_means", group_means)
        if means.shape != i.shape:
            raise ValueError(f"group_means must hold one mean per index ({i.size}); got shape {means.shape}")
        for q, mean in zip(i.tolist(), means.tolist()):
            self.visits[q] += 1
            self.easy_run[q] = self.easy_run[q] + 1 if mean == 1.0 else 0
            self.hard_run[q] = self.hard_run[q] + 1 if mean == 0.0 else 0

    def adapt(self, easy_fraction: float, hard_fraction: float) -> None:
        """One step of GRESO's adaptation (see the class): the fractions of the step's
        rolled-out groups that were all correct and all wrong."""
        easy = float(checks.probability("easy_fraction", easy_fraction))
        hard = float(checks.probability("hard_fraction", hard_fraction))
        self.p_easy = _moved(self.p_easy, easy >= TARGET_EASY)
        self.p_hard = _moved(self.p_hard, hard >= TARGET_HARD)

    def state_dict(self) -> dict:
        return {
            "p_easy": self.p_easy,
            "p_hard": self.p_hard,
            "visits": self.visits.copy(),
            "easy_run": self.easy_run.copy(),
            "hard_run": self.hard_run.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; refused when it was written for another number
        of prompts."""
        sizes = {len(state[k]) for k in ("visits", "easy_run", "hard_run")}
        if sizes != {self.visits.size}:
            raise ValueError(f"the skipper's state holds {sorted(sizes)} prompts; this run has {self.visits.size}")
        self.p_easy, self.p_hard = float(state["p_easy"]), float(state["p_hard"])
        for name in ("visits", "easy_run", "hard_run"):
            setattr(self, name, np.asarray(state[name], dtype=np.int64).copy())


def _moved(p: float, reached_target: bool) -> float:
    """p one P_STEP down (skip more) when the target was reached, else one up, within [P_MIN, P_MAX]."""
    return max(p - P_STEP, P_MIN) if reached_target else min(p + P_STEP, P_MAX)
