"""Figures of the allocation checks (claims V7, V10, V13)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures.records import rows_of
from figures.style import ESTIMATOR_LABELS

RULE_COLORS = {
    "uniform": "#7f7f7f",
    "inverse-accuracy": "#ff7f0e",
    "inverse-variance": "#9467bd",
    "VIP": "#1f77b4",
    "released code": "#d62728",
}


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


def rounding_gaps(integer_check: dict, released_check: dict):
    """Relative optimality gap of each rounding against the exact integer optimum of its own
    objective: Algorithm 2 (V7) and the released code's rounding (V13)."""
    paper = [c["rel_gap"] for c in rows_of(integer_check, "V7", "report")[0]["details"]["cells"]]
    released_row = [r for r in rows_of(released_check, "V13", "report") if "suboptimal" in r["details"]][0]
    released = [c["rel_gap"] for c in released_row["details"]["cells"]]
    floor = 1e-6  # gaps of exactly 0 are drawn in the first bin
    bins = np.logspace(np.log10(floor), np.log10(max(max(released), floor * 10)), 30)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(
        np.maximum(paper, floor),
        bins=bins,
        color=RULE_COLORS["VIP"],
        alpha=0.8,
        label=f"Algorithm 2 ({len(paper)} instances)",
    )
    ax.hist(
        np.maximum(released, floor),
        bins=bins,
        color=RULE_COLORS["released code"],
        alpha=0.6,
        label=f"released rounding ({len(released)})",
    )
    ax.set_xscale("log")
    ax.set_xlabel(f"relative gap to the integer optimum (0 drawn at {floor:g})")
    ax.set_ylabel("instances")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def released_decomposition(check: dict):
    """V13: total variance of each step from the paper's rule to the released rule, / VIP [3,32]."""
    rows = [r["details"] for r in rows_of(check, "V13", "report") if "ratios" in r["details"]]
    steps = list(rows[0]["ratios"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(steps)))
    for ax, est in zip(axes, ("dr_grpo", "rloo")):
        mine = [r for r in rows if r["estimator"] == est]
        x = np.arange(len(mine))
        width = 0.8 / len(steps)
        for i, step in enumerate(steps):
            ax.bar(x + i * width, [r["ratios"][step] for r in mine], width, color=colors[i], label=step)
        ax.set_xticks(x + 0.4 - width / 2, [r["law"] for r in mine])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title(f"{ESTIMATOR_LABELS[est]}, C = 8B")
    axes[0].set_ylabel("Σ Var(G_q) / VIP [3,32]")
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = [
    ("allocation_vs_p", "rules_variance", allocation_vs_p),
    ("allocation_variance_by_rule", "rules_variance", variance_by_rule),
    ("allocation_rounding_gaps", ("integer_rounding", "released_rule"), rounding_gaps),
    ("allocation_released_decomposition", "released_rule", released_decomposition),
]
