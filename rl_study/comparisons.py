"""The study's comparisons: the methods each one trains, its baseline and the ledger claim
it speaks to, on which problems, with which common trainer settings.

- ``allocation`` [V10]: uniform vs VIP as published (GP + exact allocation) vs VIP as released
  (V13: its objective solved exactly, and its code run literally with SLSQP) vs inverse
  accuracy vs ridge + allocation (VIP Table 3's ablation) vs Knapsack RL (its reward-buffer
  estimate, L = 2) vs DAPO dynamic sampling (uniform, all-equal groups replaced by new prompts'
  groups: it spends more rollouts than C) vs our VIP on the GP's posterior (V14), at C = 8 and
  16 rollouts per prompt on average (the 8Q / 16Q analogues), RLOO advantages;
- ``allocation_dr_grpo`` [V10]: the same with Dr. GRPO advantages (objective (6));
- ``loss`` [C8]: GRPO vs GSPO vs CTPO (adaptive sqrt(t) clip) vs CTPO with a fixed clip
  (p = 0) vs CTPO as its released code computes it (C9), with 2 PPO epochs x 4 mini-batches
  so that the later updates are off-policy;
- ``loss_long`` [C8]: the same on longer completions: reversal of 8-16 digits (up to 17
  tokens with the end of sequence, against at most 6 in the mixed problems);
- ``kl`` [R12]: beta = 0.05 with no clip, a fixed tau = 1, and tau*.

A new comparison is one more entry of :data:`COMPARISONS` (and, for the figures, of
figures.rl_study.COMPARISONS).
"""

from __future__ import annotations

from rl_study.tasks import FAMILIES
from trainer.config import QUIET, TINY_OFFLINE

PROMPTS = 16
WARMUP_STEPS = 800
BASE = (
    TINY_OFFLINE
    | QUIET
    | dict(
        prompts_per_step=PROMPTS,
        budget=8 * PROMPTS,
        min_rollouts=4,
        max_rollouts=16,
        advantage="rloo",
        learning_rate=1e-4,
        micro_batch_size=128,
        generation_batch_size=256,
    )
)
PROBLEM_SETS = {  # name -> the rl_study.tasks families and sizes, and the completion budget
    "mixed": {"families": FAMILIES, "sizes": None, "max_new_tokens": 6},
    "long_reversal": {"families": ("rev",), "sizes": {"rev": tuple(range(8, 17))}, "max_new_tokens": 18},
}
ALLOCATION_RULES = {  # method name -> config fields; the GP rules use the paper's noiseless GP (Algorithm 1)
    "uniform": {"allocation": "uniform"},
    "vip": {"allocation": "vip", "predictor": "gp"},
    "vip_released": {"allocation": "vip_released", "predictor": "gp"},
    "vip_released_slsqp": {"allocation": "vip_released_slsqp", "predictor": "gp"},
    "inverse_accuracy": {"allocation": "inverse_accuracy", "predictor": "gp"},
    "knapsack": {"allocation": "knapsack", "predictor": "reward_buffer", "min_rollouts": 2},
    "dapo": {"allocation": "uniform", "selection": "dapo"},
    "vip_posterior": {"allocation": "vip_posterior", "predictor": "gp_fitted"},
    "ridge": {"allocation": "vip", "predictor": "ridge"},
}
ALLOCATION_METHODS = {
    f"{name}@{q}Q": fields | {"budget": q * PROMPTS, "max_rollouts": 2 * q}
    for q in (8, 16)
    for name, fields in ALLOCATION_RULES.items()
}
LOSS_METHODS = {
    "grpo": {"loss": "grpo"},
    "gspo": {"loss": "gspo"},
    "ctpo": {"loss": "ctpo"},
    "ctpo_fixed_clip": {"loss": "ctpo", "ctpo_power": 0.0},
    "ctpo_released": {"loss": "ctpo_released"},
}
COMPARISONS = {
    "allocation": {"claim": "V10", "baseline": "uniform@8Q", "methods": ALLOCATION_METHODS},
    "allocation_dr_grpo": {
        "claim": "V10",
        "baseline": "uniform@8Q",
        "methods": ALLOCATION_METHODS,
        "common": {"advantage": "dr_grpo"},
    },
    "loss": {
        "claim": "C8",
        "baseline": "grpo",
        "methods": LOSS_METHODS,
        "common": {"ppo_epochs": 2, "mini_batches": 4},
    },
    "loss_long": {
        "claim": "C8",
        "problems": "long_reversal",
        "baseline": "grpo",
        "methods": LOSS_METHODS,
        "common": {"ppo_epochs": 2, "mini_batches": 4},
    },
    "kl": {
        "claim": "R12",
        "baseline": "no_clip",
        "methods": {
            "no_clip": {"kl_clip": "none"},
            "fixed_tau": {"kl_clip": "fixed", "kl_tau": 1.0},
            "tau_star": {"kl_clip": "tau_star"},
        },
        "common": {"kl_coef": 0.05, "kl_estimator": "k3"},
    },
}


def problem_set(comparison: str) -> str:
    """The PROBLEM_SETS name a comparison trains on (``mixed`` unless it names one)."""
    return COMPARISONS[comparison].get("problems", "mixed")
