"""The names of the options whose behaviour needs torch, for TrainConfig's checks, which import
no torch: the loss (with its default clip range, which the config resolves), the aggregation,
the KL estimator and ``cpu_bf16``. Each behaviour table (trainer.losses.LOSSES, AGGREGATIONS,
KL_ESTIMATORS; trainer.precision.CPU_BF16) holds these names in this order, which a test checks
key for key (tests/test_trainer_config.py).
"""

from __future__ import annotations

from theory.importance import CTPO_CLIP, GRPO_CLIP, GSPO_CLIP

# loss -> its default (eps_low, eps_high); the ranges are theory.importance's
LOSS_CLIPS = {"grpo": GRPO_CLIP, "gspo": GSPO_CLIP, "ctpo": CTPO_CLIP[:2], "ctpo_released": CTPO_CLIP[:2]}
AGGREGATIONS = ("token_mean", "sequence_mean", "constant")
KL_ESTIMATORS = ("k1", "k2", "k3")
CPU_BF16 = ("off", "on", "auto")
