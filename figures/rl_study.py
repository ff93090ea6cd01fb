"""Figures of the small-scale RL study (``python -m rl_study``): learning curves and final
Mean@8 per method, one figure per comparison."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

COMPARISONS = ("allocation", "allocation_dr_grpo", "loss", "loss_long", "kl")


def _smooth(values, width: int = 10) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    width = min(width, values.size)
    return np.convolve(values, np.ones(width) / width, mode="valid")


def study(check: dict):
    """Left: training reward (10-step moving mean ± SE over seeds) against rollouts consumed.
    Right: Mean@8 on held-out and on training problems, 95 % t intervals over seeds; dotted
    lines mark the warmed-up model RL starts from."""
    rows = [r["details"] for r in check["results"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for i, d in enumerate(rows):
        mean, se = _smooth(d["reward_curve_mean"]), _smooth(d["reward_curve_se"])
        x = np.asarray(d["rollouts_consumed"][len(d["rollouts_consumed"]) - mean.size :], dtype=float)
        left.plot(x, mean, color=f"C{i}", label=d["method"], lw=1.2)
        left.fill_between(x, mean - se, mean + se, color=f"C{i}", alpha=0.15, lw=0)
    left.set_xlabel("rollouts consumed")
    left.set_ylabel("training reward (mean over seeds)")
    left.legend(frameon=False, fontsize=7)
    y = np.arange(len(rows))
    for offset, split, marker in ((-0.15, "test", "o"), (0.15, "train", "s")):
        values = [d[f"{split}/mean@8"] for d in rows]
        errors = [d[f"{split}/mean@8_ci95"] for d in rows]
        bars = right.errorbar(
            values,
            y + offset,
            xerr=errors,
            fmt=marker,
            ms=4,
            capsize=2,
            label="held-out" if split == "test" else "training problems",
        )
        if f"{split}/start_mean@8" in rows[0]:
            right.axvline(rows[0][f"{split}/start_mean@8"], color=bars[0].get_color(), ls=":", lw=1)
    right.set_yticks(y, [d["method"] for d in rows], fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("Mean@8 (95 % CI over seeds)")
    right.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def how_to_record(check_names, records_dir) -> str:
    """The study command that writes the records of ``check_names`` (``rl_study_<comparison>``)."""
    comparisons = " ".join(name.removeprefix("rl_study_") for name in check_names)
    return f"run `python -m rl_study {comparisons} --out {records_dir}` (about 45 minutes for every comparison)"


FIGURES = [(f"rl_study_{name}", f"rl_study_{name}", study) for name in COMPARISONS]
