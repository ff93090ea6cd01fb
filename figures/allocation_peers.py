"""Figures of the rule benchmark (claim V14)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from figures.records import rows_of


def rules_benchmark(check: dict):
    """Every arm on one chart: realised variance / uniform against the useful-rollout share's
    difference to uniform's (+-2 SE bars, paired over seeds), and each arm's allocation time
    per step at B = 512."""
    details = rows_of(check, "V14", "claim")[0]["details"]
    summary, seconds = details["summary"], details["seconds"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    markers = "osD^v<>pXh*P"
    for k, (name, s) in enumerate(summary.items()):
        left.errorbar(
            s["useful_vs_uniform"],
            s["variance_vs_uniform"],
            xerr=2 * s["useful_vs_uniform_se"],
            yerr=2 * s["se"],
            fmt=markers[k % len(markers)],
            capsize=2,
            label=name,
        )
    left.axhline(1.0, color="black", lw=0.8)
    left.axvline(0.0, color="black", lw=0.8)
    left.set_xlabel("useful rollouts / rollouts generated, minus uniform's (paired)")
    left.set_ylabel("Σ Var(G_q) / uniform")
    left.set_title(f"drifting loop, Q = {details['Q']}, B = {details['B']}, {details['seeds']} seeds", fontsize=9)
    left.legend(fontsize=6, frameon=False, loc="upper right")
    names = list(seconds)
    right.barh(range(len(names)), [1e3 * seconds[n] for n in names], color="#1f77b4")
    right.set_yticks(range(len(names)), names, fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("allocation per step at B = 512 (ms)")
    fig.tight_layout()
    return fig


FIGURES = [("allocation_rules_benchmark", "allocation_peers", rules_benchmark)]
