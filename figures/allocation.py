"""Figures of the allocation checks (claims V5-V7, V10)."""

from __future__ import annotations

import numpy as np
import matplotlib.pyplot as plt

from figures.records import rows_of
from figures.style import ESTIMATOR_LABELS

RULE_COLORS = {"uniform": "#7f7f7f", "inverse-accuracy": "#ff7f0e", "inverse-variance": "#9467bd", "VIP": "#1f77b4"}


def allocation_vs_p(check: dict):
    """VIP Fig. 2 analogue: rollouts n_q of each rule against the prompt's success probability."""
    curves = rows_of(check, "V10", "claim")[0]["details"]["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), sharey=True, squeeze=False)
    for ax, (est, curve) in zip(axes[0], curves.items()):
        for rule, color in RULE_COLORS.items():
            ax.plot(curve["p"], curve[rule], ".", ms=3, color=color, label=rule)
        ax.set_xlabel("success probability p")
        ax.set_title(f"{ESTIMATOR_LABELS[est]}, B = 512, C = 8B")
    axes[0, 0].set_ylabel("rollouts n")
    axes[0, 0].legend(frameon=False, markerscale=3)
    fig.tight_layout()
    return fig


def variance_by_rule(check: dict):
    """Total gradient variance of each rule relative to uniform, per success-probability law."""
    cells = rows_of(check, "V10", "claim")[0]["details"]["cells"]
    settings = [c for c in cells if c["C"] == min(x["C"] for x in cells)]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, est in zip(axes, ("dr_grpo", "rloo")):
        mine = [c for c in settings if c["estimator"] == est]
        x = np.arange(len(mine))
        width = 0.8 / len(RULE_COLORS)
        for i, (rule, color) in enumerate(RULE_COLORS.items()):
            ratio = [c["total_variance"][rule] / c["total_variance"]["uniform"] for c in mine]
            ax.bar(x + i * width, ratio, width, color=color, label=rule)
        ax.set_xticks(x + 0.4 - width / 2, [c["law"] for c in mine])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title(f"{ESTIMATOR_LABELS[est]}, C = 8B")
    axes[0].set_ylabel("Σ Var(G_q) / uniform")
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return fig


FIGURES = [
    ("allocation_vs_p", "rules_variance", allocation_vs_p),
    ("allocation_variance_by_rule", "rules_variance", variance_by_rule),
]
