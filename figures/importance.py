"""Figures of the CTPO checks (claims C5, C7)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures.records import rows_of
from figures.style import COLORS


def fig1_analogue(check: dict):
    """CTPO Fig. 1 analogue: std of log rho_t^cum with the sigma_hat sqrt(t) fit (top), and the
    per-position clip rate under fixed [0.5, 5] and sqrt(t)-adaptive clipping (bottom)."""
    curves = rows_of(check, "C7", "report")[0]["details"]["curves"]
    t = np.array(curves["t"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 5.2), sharex=True)
    top.plot(t, curves["std"], color=COLORS["dr_grpo"], label="empirical std of log ρ_t^cum")
    top.plot(
        t, curves["sigma_hat"] * np.sqrt(t), "--", color=COLORS["theory"], label=f"σ̂√t, σ̂ = {curves['sigma_hat']:.4f}"
    )
    top.set_ylabel("std")
    top.legend(frameon=False)
    top.set_title(f"Markov token pair, H = {curves['H']}, {curves['n']} sequences")
    bottom.plot(t, curves["fixed"], color=COLORS["rloo"], label="fixed ratio ∈ [0.5, 5]")
    bottom.plot(t, curves["adaptive"], color=COLORS["alt"], label="adaptive e^(−0.025√t) … e^(0.05√t)")
    bottom.set_xlabel("token position t")
    bottom.set_ylabel("clip rate")
    bottom.legend(frameon=False)
    fig.tight_layout()
    return fig


def variance_ratio(check: dict):
    """Var(rho^seq) / Var(rho_t^cum) against t for several per-position chi2 (the paper's
    delta; exact enumeration, i.i.d. positions), and the limit H/t."""
    row = [r for r in rows_of(check, "C5", "claim") if "limits" in r["details"]][0]
    limits, horizon = row["details"]["limits"], row["details"]["H"]
    t = np.arange(1, horizon + 1)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    cells = sorted(limits.values(), key=lambda c: -c["chi2_per_position"])
    for cell, color in zip(cells, ("#d62728", "#ff7f0e", "#1f77b4")):
        ax.plot(
            t,
            cell["ratio"],
            "o-",
            ms=4,
            color=color,
            label=f"χ² per position = {cell['chi2_per_position']:.1e} (exact)",
        )
    ax.plot(t, horizon / t, "--", color=COLORS["theory"], label="H/t (χ² → 0)")
    ax.set_yscale("log")
    ax.set_xlabel("position t")
    ax.set_ylabel("Var(ρ^seq) / Var(ρ_t^cum)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


FIGURES = [
    ("importance_fig1", "importance_long_horizon", fig1_analogue),
    ("importance_variance_ratio", "importance_variance", variance_ratio),
]
