"""Figures of the gradient-variance check (claims V1-V4)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from figures.records import rows_of
from figures.style import COLORS, ESTIMATOR_LABELS
from theory.variance import gradient_variance

SHOWN_P = (0.1, 0.5, 0.99)
SHOWN_Z = "gamma(2, 0.5)"


def _variance_cells(check: dict, claim: str) -> list[dict]:
    row = next(r for r in rows_of(check, claim, "claim") if r["details"]["stat"] == "z_var")
    return row["details"]["cells"]


def _sigma_z2(cells: list[dict], estimator: str) -> float:
    """Var(Z) of the cells' norm law, read back from the record: Props 4.2/4.3 are linear in
    sigma_Z^2, so it is var_theory / gradient_variance(estimator, n, p, sigma_z2=1) at any cell
    with 0 < p < 1."""
    cell = next(c for c in cells if 0 < c["p"] < 1)
    return cell["var_theory"] / gradient_variance(estimator, cell["n"], p=cell["p"], sigma_z2=1.0)


def variance_vs_n(check: dict):
    """Var(G) vs n: Props 4.2/4.3 as lines, Monte-Carlo as points with ±2 SE bars."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, (claim, est) in zip(axes, (("V1", "dr_grpo"), ("V2", "rloo"))):
        cells = [c for c in _variance_cells(check, claim) if c["z_dist"] == SHOWN_Z]
        sigma_z2 = _sigma_z2(cells, est)
        n_all = sorted({c["n"] for c in cells})
        n_line = np.linspace(min(n_all), max(n_all), 200)
        for p, marker in zip(SHOWN_P, ("o", "s", "^")):
            pts = sorted((c for c in cells if np.isclose(c["p"], p)), key=lambda c: c["n"])
            if not pts:
                continue
            ax.plot(n_line, gradient_variance(est, n_line, p=p, sigma_z2=sigma_z2), color=COLORS["theory"], lw=1)
            ax.errorbar(
                [c["n"] for c in pts],
                [c["var"] for c in pts],
                yerr=[2 * c["var_se"] for c in pts],
                fmt=marker,
                ms=4,
                color=COLORS[est],
                label=f"MC, p = {p}",
            )
        _log_n_axis(ax, n_all)
        ax.set_title(f"{ESTIMATOR_LABELS[est]} ({'Prop 4.2' if est == 'dr_grpo' else 'Prop 4.3'})")
        ax.legend(title=f"Z ~ {SHOWN_Z}; lines: theory", frameon=False)
    axes[0].set_ylabel("Var(G)")
    fig.tight_layout()
    return fig


def violation_map(check: dict):
    """V4: Var(G)/Prop - 1 (exact i.i.d.-pairs formula) over (p, latent correlation), per n.

    One panel per n serves both estimators: G_RLOO = n/(n-1) G_DrGRPO exactly, so
    their relative deviations coincide.
    """
    report = rows_of(check, "V4", "report")[0]
    cells = [c for c in report["details"]["map"] if c["estimator"] == "dr_grpo"]
    ns = sorted({c["n"] for c in cells})
    ps = sorted({c["p"] for c in cells})
    rhos = sorted({c["rho_latent"] for c in cells})
    values = np.array([c["rel_dev_var"] for c in cells])
    bound = max(abs(values.min()), abs(values.max()), 1e-9)
    norm = TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)
    fig, axes = plt.subplots(1, len(ns), figsize=(3.4 * len(ns) + 1, 3.2), squeeze=False, layout="constrained")
    for ax, n in zip(axes[0], ns):
        grid = np.full((len(ps), len(rhos)), np.nan)
        for c in cells:
            if c["n"] == n:
                grid[ps.index(c["p"]), rhos.index(c["rho_latent"])] = c["rel_dev_var"]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="RdBu_r", norm=norm)
        for (a, b), v in np.ndenumerate(grid):
            ax.text(b, a, f"{v:+.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(rhos)), [f"{r:+.1f}" for r in rhos])
        ax.set_yticks(range(len(ps)), [f"{p:g}" for p in ps])
        ax.set_title(f"n = {n}")
        ax.set_xlabel("latent correlation ρ")
        ax.grid(False)
    axes[0, 0].set_ylabel("success probability p")
    fig.colorbar(image, ax=axes, shrink=0.9, label="Var(G) / Prop 4.2-4.3 − 1")
    fig.suptitle("V4: R, Z correlated (Gaussian copula, log-normal Z); Dr. GRPO = RLOO")
    return fig


def real_gradient(check: dict):
    """Var(G) with Z = ||H(o)||: Monte-Carlo, the exact value, and Props 4.2/4.3."""
    reports = rows_of(check, "V4", "report")
    exact = next(r for r in rows_of(check, "V4", "claim"))["details"]["cells"]
    fig, axes = plt.subplots(1, len(reports), figsize=(4 * len(reports), 3.2), squeeze=False)
    for ax, report in zip(axes[0], reports):
        rule_cells = report["details"]["cells"]
        rule = rule_cells[0]["rule"]
        for est in ("dr_grpo", "rloo"):
            pts = sorted((c for c in rule_cells if c["estimator"] == est), key=lambda c: c["n"])
            ex = sorted((c for c in exact if c["rule"] == rule and c["estimator"] == est), key=lambda c: c["n"])
            n = [c["n"] for c in pts]
            ax.errorbar(
                n,
                [c["var"] for c in pts],
                yerr=[2 * c["var_se"] for c in pts],
                fmt="o",
                ms=4,
                color=COLORS[est],
                label=f"{ESTIMATOR_LABELS[est]} MC",
            )
            ax.plot(
                n,
                [c["var_theory"] for c in ex],
                "-",
                color=COLORS[est],
                label=f"{ESTIMATOR_LABELS[est]} exact (enumeration)",
            )
            ax.plot(
                n,
                [c["var_theory"] for c in pts],
                "--",
                color=COLORS[est],
                alpha=0.6,
                label=f"{ESTIMATOR_LABELS[est]} Prop 4.2/4.3",
            )
        _log_n_axis(ax, n)
        ax.set_title(f"verifier '{rule}', corr(R,Z) = {report['details']['corr_rz']:+.2f}")
        ax.legend(frameon=False, fontsize=7)
    axes[0, 0].set_ylabel("Var(G)")
    fig.tight_layout()
    return fig


def _log_n_axis(ax, n_values) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(n_values)), [str(v) for v in sorted(set(n_values))])
    ax.minorticks_off()
    ax.set_xlabel("rollouts per prompt n")


FIGURES = [
    ("variance_vs_n", "binary_rewards", variance_vs_n),
    ("variance_violation_map", "correlated_rewards", violation_map),
    ("variance_real_gradient", "token_policy", real_gradient),
]
