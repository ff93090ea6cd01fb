"""Figure of the real-model study (``python -m rl_study.real_model``): SmolLM2-135M-Instruct
trained on a CPU, training reward and entropy per step, and the paired Mean@8 gains."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def real_model(check: dict):
    """Left: training reward per step (mean over seeds; thin lines: each seed). Middle: the
    entropy estimate per step. Right: each run's Mean@8 gain over the pretrained model on its
    training problems, 95 % t interval over the problems."""
    runs = [r["details"] for r in check["results"] if "seed" in r["details"]]
    arms = list(dict.fromkeys(d["arm"] for d in runs))
    fig, (reward, entropy, gain) = plt.subplots(1, 3, figsize=(10, 3.3), gridspec_kw={"width_ratios": [3, 3, 2]})
    for i, arm in enumerate(arms):
        mine = [d for d in runs if d["arm"] == arm]
        for axis, key in ((reward, "reward"), (entropy, "entropy")):
            curves = np.array([d["curve"][key] for d in mine], dtype=float)
            steps = np.arange(1, curves.shape[1] + 1)
            for curve in curves:
                axis.plot(steps, curve, color=f"C{i}", lw=0.5, alpha=0.4)
            axis.plot(steps, curves.mean(0), color=f"C{i}", lw=1.5, label=arm)
    reward.set_xlabel("step (16 prompts, 128 rollouts)")
    reward.set_ylabel("training reward")
    reward.legend(frameon=False, fontsize=7)
    entropy.set_xlabel("step")
    entropy.set_ylabel("entropy estimate (nats / token)")
    labels = [f"{d['arm']} s{d['seed']}" for d in runs]
    y = np.arange(len(runs))
    colors = [f"C{arms.index(d['arm'])}" for d in runs]
    for k, d in enumerate(runs):
        gain.errorbar(d["train_gain"], y[k], xerr=d["train_gain_ci95"], fmt="o", ms=4, color=colors[k])
    gain.axvline(0, color="#333333", lw=0.8)
    gain.set_yticks(y, labels, fontsize=7)
    gain.invert_yaxis()
    gain.set_xlabel("Mean@8 gain, training problems")
    fig.tight_layout()
    return fig


def how_to_record(check_names, records_dir) -> str:
    return f"run `python -m rl_study.real_model --out {records_dir}` (about an hour on 2 cores)"


FIGURES = [("rl_study_real_model", "rl_study_real_model", real_model)]
