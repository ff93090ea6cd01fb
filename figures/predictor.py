"""Figures of the predictor checks (claims V9, V10)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures.records import rows_of


def mae_by_step(check: dict):
    """VIP Fig. 3 analogue: MAE on the next batch per step, mean over seeds with +-2 SE bands."""
    details = rows_of(check, "V9", "claim")[0]["details"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in details["curves"].items():
        curve, se = np.array(curve), np.array(details["curve_se"][name])
        steps = np.arange(1, curve.size + 1)
        (line,) = ax.plot(steps, curve, label=name)
        ax.fill_between(steps, curve - 2 * se, curve + 2 * se, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("MAE of p_hat on the batch")
    ax.set_title(f"drifting world, Q = {details['Q']}, B = {details['B']}, {details['seeds']} seeds")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def loop_variance(check: dict):
    """Realised total gradient variance of each predictor + allocator pair, / uniform (Table 3 analogue)."""
    summary = rows_of(check, "V10", "claim")[0]["details"]["summary"]
    names = list(summary)
    ratio = [summary[n]["variance_vs_uniform"] for n in names]
    se = [summary[n]["se"] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(range(len(names)), ratio, yerr=[2 * s for s in se], color="#1f77b4")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("Σ Var(G_q) / uniform")
    fig.tight_layout()
    return fig


FIGURES = [
    ("predictor_mae", "predictor_mae", mae_by_step),
    ("predictor_loop_variance", "allocation_loop", loop_variance),
]
