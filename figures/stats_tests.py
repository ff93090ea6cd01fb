"""Figures of the App. B calibration (claim V11): size under the null, power curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from figures.records import rows_of

TEST_COLORS = {"fisher": "#1f77b4", "edgington": "#2ca02c", "levene": "#d62728", "obrien": "#9467bd"}
TEST_LABELS = {
    "fisher": "Fisher (B.1)",
    "edgington": "Edgington (B.2)",
    "levene": "Levene median (B.3)",
    "obrien": "O'Brien (B.4)",
}


def size_by_scenario(check: dict):
    """Rejection rate at alpha = 0.05 under each null scenario, with 95 % Wilson intervals."""
    points = []
    for row in rows_of(check, "V11"):
        key = row["details"].get("key")
        if key not in TEST_COLORS:
            continue
        for cell in row["details"]["cells"]:
            label = f"R {cell['rewards']}\nZ {cell['norms']}\nQ={cell['Q']}, n={cell['n']}"
            points.append((label, key, cell["rates"][key]))
    labels = list(dict.fromkeys(p[0] for p in points))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 3.8))
    offsets = dict(zip(TEST_COLORS, np.linspace(-0.27, 0.27, len(TEST_COLORS))))
    drawn = set()
    for label, key, rate in dict(((p[0], p[1]), p) for p in points).values():
        x = labels.index(label) + offsets[key]
        err = [[rate["rate"] - rate["ci95"][0]], [rate["ci95"][1] - rate["rate"]]]
        ax.errorbar(
            x,
            rate["rate"],
            yerr=err,
            fmt="o",
            ms=4,
            color=TEST_COLORS[key],
            label=None if key in drawn else TEST_LABELS[key],
        )
        drawn.add(key)
    ax.axhline(0.05, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("rejection rate under H0 (alpha = 0.05)")
    ax.legend(frameon=False, ncol=2)
    fig.tight_layout()
    return fig


def power_curves(check: dict):
    """Power against Corr(R, log Z) = rho (correlation tests) and the spread tau of Var(Z_q)."""
    cells = [
        c for row in rows_of(check, "V11", "report") if row["what"].startswith("power") for c in row["details"]["cells"]
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, param, tests in ((axes[0], "rho", ("fisher", "edgington")), (axes[1], "tau", ("levene", "obrien"))):
        for (q, n), style in zip(sorted({(c["Q"], c["n"]) for c in cells}, reverse=True), ("-", ":")):
            mine = sorted((c for c in cells if param in c and (c["Q"], c["n"]) == (q, n)), key=lambda c: c[param])
            for test in tests:
                x = [c[param] for c in mine]
                y = [c["rates"][test]["rate"] for c in mine]
                ax.plot(
                    x, y, style, marker="o", ms=3, color=TEST_COLORS[test], label=f"{TEST_LABELS[test]}, Q={q}, n={n}"
                )
        ax.axhline(0.05, color="black", lw=0.8, ls="--")
        ax.set_xlabel("correlation rho of R and log Z" if param == "rho" else "spread tau of log sd(Z_q)")
        ax.legend(frameon=False, fontsize=6)
    axes[0].set_ylabel("rejection rate (alpha = 0.05)")
    fig.tight_layout()
    return fig


FIGURES = [
    ("stats_size", "stats_calibration", size_by_scenario),
    ("stats_power", "stats_calibration", power_curves),
]
