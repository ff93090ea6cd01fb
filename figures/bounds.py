"""Figures of the RLHF-gen checks (claims R2-R4, R8, R12-R16)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures.records import rows_of

BOUND_CLAIMS = ("R2", "R3", "R4", "R8", "R13")


def tightness(check: dict):
    """Each bound against the (1 - delta)-quantile of the error it bounds, per (world, n, K) cell."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(BOUND_CLAIMS)
    labels = None
    for i, claim in enumerate(BOUND_CLAIMS):
        rows = rows_of(check, claim, "claim")
        labels = [f"d={r['details']['distance']}\nn={r['details']['n']}, K={r['details']['K']}" for r in rows]
        x = np.arange(len(rows)) + i * width
        ax.bar(x, [r["details"]["bound"] for r in rows], width, label=f"{claim} bound", alpha=0.35, color=f"C{i}")
        ax.plot(x, [r["details"]["error_quantile"] for r in rows], "o", color=f"C{i}", ms=4)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("bound (bars), (1-δ)-quantile of the error (dots)")
    ax.legend(frameon=False, fontsize=7, ncol=len(BOUND_CLAIMS))
    fig.tight_layout()
    return fig


def tau_rule(check: dict):
    """Actual mean error E|J_hat^{phi,tau} - J*| against tau, with tau* (mean) and the error-optimal tau."""
    cells = rows_of(check, "R12", "report")[0]["details"]["cells"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, c in enumerate(cells):
        (line,) = ax.plot(c["tau_grid"], c["mean_error"], color=f"C{i}", label=f"d={c['distance']}, n={c['n']}")
        ax.plot(c["tau_star_mean"], c["error_at_tau_star"], "v", color=line.get_color())
        ax.plot(c["tau_actual_best"], c["error_at_best"], "o", mfc="none", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("τ")
    ax.set_ylabel("E|Ĵ − J*|  (▼ τ*, ○ best τ)")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def budget_rule(check: dict):
    """Exact MSE / best MSE against K at equal cost, one curve per c_prefill/c_decode, K* rules marked."""
    cells = rows_of(check, "R14", "claim")[-1]["details"]["cells"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, c in enumerate(cells):
        mse = np.array(c["mse"], dtype=float)
        rel = mse / mse.min()
        (line,) = ax.plot(
            c["k_grid"],
            rel,
            color=f"C{i % 10}",
            ls="-" if c["distance"] == cells[0]["distance"] else "--",
            label=f"d={c['distance']}, c_p/c_d={c['c_prefill/c_decode']:g}",
        )
        for marker, rule in (("s", "Corollary 4"), ("^", "Corollary 5")):
            k = c[f"{rule} K"]
            ax.plot(k, rel[k - 1], marker, color=line.get_color(), ms=5)
    ax.set_xscale("log")
    ax.set_ylim(0.95, 2.0)
    ax.set_xlabel("K (rollouts per prompt)")
    ax.set_ylabel("MSE / best MSE  (■ Cor. 4, ▲ Cor. 5)")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


FIGURES = [
    ("bounds_tightness", "bounds_sampling", tightness),
    ("bounds_tau_rule", "bounds_tau", tau_rule),
    ("bounds_budget_rule", "bounds_budget", budget_rule),
]
