"""The study's results: per comparison, ledger ``report`` rows (means and 95 % t intervals over
seeds, paired gains over the warmed-up start and paired differences to the baseline) and the
README's markdown table."""

from __future__ import annotations

import numpy as np
from scipy import stats

from rl_study.comparisons import COMPARISONS
from simulators.ledger import report
from trainer.config import TrainConfig

SPLITS = ("test", "train")
METRICS = ("pass@1", "pass@8", "mean@8", "maj@8")


def _interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval over seeds."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)


def _paired(details: dict, prefix: str, mine, theirs) -> None:
    """Mean and 95 % CI of the paired differences, and the paired t-test's p, into ``details``."""
    mine, theirs = np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float)
    details[prefix], details[f"{prefix}_ci95"] = _interval(mine - theirs)
    details[f"{prefix}_p"] = float(stats.ttest_rel(mine, theirs).pvalue)


def summarise(comparison: str, runs: list[dict], starts: dict[int, dict]) -> list:
    """``report`` rows under the comparison's claim id: per method its curve and metrics, the
    paired gain over the warmed-up start ``starts[seed]``, the paired difference to the baseline."""
    spec = COMPARISONS[comparison]
    ran = [m for m in spec["methods"] if any(r["method"] == m for r in runs)]
    by_method = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in ran}
    base = {s: {r["seed"]: r[s]["mean@8"] for r in by_method[spec["baseline"]]} for s in SPLITS}
    rows = []
    for method, rs in by_method.items():
        curves = np.array([r["reward_curve"] for r in rs])
        details = {
            "method": method,
            "baseline": spec["baseline"],
            "seeds": [r["seed"] for r in rs],
            "rollouts_consumed": np.mean([r["rollouts_consumed"] for r in rs], axis=0).tolist(),  # mean over seeds
            "reward_curve_mean": curves.mean(0).tolist(),
            "reward_curve_se": (curves.std(0, ddof=1) / np.sqrt(len(rs))).tolist(),
            "zero_variance_mean": float(np.mean([np.mean(r["zero_variance_groups"]) for r in rs])),
        }
        if all("clip_fractions" in r for r in rs):  # a cached run file without them gives no clip column
            own = rs[0]["config"].get("loss", TrainConfig.loss)
            rules = rs[0]["clip_fractions"]
            details["clip_fractions"] = {k: float(np.mean([r["clip_fractions"][k] for r in rs])) for k in rules}
            details["clip_fraction_own"] = details["clip_fractions"][own]
        for split_name in SPLITS:
            for key in METRICS:
                mean, half = _interval([r[split_name][key] for r in rs])
                details[f"{split_name}/{key}"], details[f"{split_name}/{key}_ci95"] = mean, half
            mine = [r[split_name]["mean@8"] for r in rs]
            details[f"{split_name}/mean@8_per_seed"] = mine
            start = [starts[r["seed"]][split_name]["mean@8"] for r in rs]
            details[f"{split_name}/start_mean@8"] = float(np.mean(start))
            details[f"{split_name}/start_mean@8_per_seed"] = start
            _paired(details, f"{split_name}/gain_over_start", mine, start)
            if method != spec["baseline"]:
                _paired(details, f"{split_name}/paired_diff", mine, [base[split_name][r["seed"]] for r in rs])
        what = f"study {comparison}, {method}: held-out Mean@8 over {len(rs)} seeds"
        rows.append(report(spec["claim"], what, details, details["test/mean@8"]))
    return rows


def markdown_table(rows) -> str:
    """The README's results table of one comparison: means ± 95 % CI half-widths over seeds,
    paired differences with the paired t-test's p in brackets."""

    def ci(d, key):
        return f"{d[key]:.3f} ± {d[key + '_ci95']:.3f}"

    def paired(d, key):
        if key not in d:
            return "baseline"
        p = d[key + "_p"]
        shown = "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"
        return f"{d[key]:+.3f} ± {d[key + '_ci95']:.3f} ({shown})"

    clipped = all("clip_fraction_own" in r.details for r in rows)
    header = (
        "| method | training problems Mean@8 | gain over the start (p) | Δ vs baseline (p) | held-out Mean@8 "
        "| gain over the start (p) | Δ vs baseline (p) | held-out Pass@8 | held-out Maj@8 | zero-variance groups |"
    )
    header += " clipped (own rule) |" if clipped else ""
    lines = [header, "|" + " --- |" * header.count(" |")]
    for d in (r.details for r in rows):
        cells = [d["method"]]
        for split_name in SPLITS[::-1]:
            cells += [ci(d, f"{split_name}/mean@8")]
            cells += [paired(d, f"{split_name}/gain_over_start"), paired(d, f"{split_name}/paired_diff")]
        cells += [ci(d, "test/pass@8"), ci(d, "test/maj@8"), f"{d['zero_variance_mean']:.2f}"]
        cells += [f"{d['clip_fraction_own']:.4f}"] if clipped else []
        lines.append("| " + " | ".join(cells) + " |")
    start = rows[0].details
    lines.append(
        f"\nwarmed-up start: training problems Mean@8 {start['train/start_mean@8']:.3f}, "
        f"held-out {start['test/start_mean@8']:.3f}"
    )
    return "\n".join(lines)
