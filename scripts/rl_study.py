"""A small-scale RL study on the CPU: do the papers' effects appear in real (tiny) training runs?

    python scripts/rl_study.py                      # every comparison (about 45 minutes on 2 cores)
    python scripts/rl_study.py allocation kl        # some of them
    python scripts/rl_study.py loss --seeds 5 --steps 150 --jobs 2 --out records

Setting: 1,200 problems of trainer.tasks, 25 % held out: the five families mixed
(``PROBLEM_SETS["mixed"]``), or long reversals for ``loss_long``. A 2-layer
Qwen2-architecture model per seed, warmed up by 800 supervised steps of 64 on the training
problems (trainer.warmup: Mean@8 on the training problems starts near 0.5 with per-prompt
success spread over [0, 1]; 500 steps start it near 0.2 with half the groups all-wrong;
learning rate 1e-3 RL after a 300-step warm-up on 30 % of them collapsed to deterministic
wrong answers); then
every method of the comparison trains from that same warmed-up model (paired by seed) for
``steps`` RL steps of 16 prompts, RLOO advantages, learning rate 1e-4. Comparisons (the
ledger claim each one speaks to in brackets):

- ``allocation`` [V10]: uniform vs VIP as published (GP + exact allocation) vs VIP as released
  (V13) vs inverse accuracy vs ridge + allocation (VIP Table 3's ablation), at C = 8 and 16
  rollouts per prompt on average (the 8Q / 16Q analogues), RLOO advantages;
- ``allocation_dr_grpo`` [V10]: the same with Dr. GRPO advantages (objective (6));
- ``loss`` [C8]: GRPO vs GSPO vs CTPO (adaptive sqrt(t) clip) vs CTPO with a fixed clip
  (p = 0), with 2 PPO epochs x 4 mini-batches so that the later updates are off-policy;
- ``loss_long`` [C8]: the same on longer completions: reversal of 8-16 digits (up to 17
  tokens with the end of sequence, against at most 6 in the mixed problems);
- ``kl`` [R12]: beta = 0.05 with no clip, a fixed tau = 1, and tau*.

Every finished piece is saved as it finishes, so a killed study resumes where it stopped: the
warmed-up model of each seed and its evaluation (``OUT/rl_study/warmup/``), and each (method,
seed) run (``OUT/rl_study/<comparison>/``). Runs go to ``--jobs`` worker processes of one torch
thread each; a run's result does not depend on the number of workers. The end writes one
ledger record per comparison (check ``rl_study_<comparison>``, ``report`` rows: the study has
no pass/fail claim, effects may or may not appear) with, per method, the learning curve
(reward against rollouts consumed), the zero-variance-group fraction, the share of tokens
outside each loss's clip range (GRPO, GSPO: of sequences, CTPO), Pass@1/Pass@8/Mean@8/
Maj@8 on the held-out problems and on 300 training problems (the objective RL optimises) with
95 % t intervals over seeds, the paired gain over the warmed-up start, and a paired t-test of
method - baseline on Mean@8 (same seed = same warmed-up model).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from simulators.ledger import format_table, report, write_record  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.evaluate import evaluate  # noqa: E402
from trainer.loop import Trainer  # noqa: E402
from trainer.models import tiny_model  # noqa: E402
from trainer.rewards import get_reward  # noqa: E402
from trainer.tasks import FAMILIES, generate_tasks, split, task_tokenizer  # noqa: E402
from trainer.warmup import supervised_warmup  # noqa: E402

PROMPTS = 16
EVAL_TRAIN = 300  # training problems re-evaluated at the end: the objective RL optimises
WARMUP_STEPS = 800
BASE = dict(
    model="tiny:qwen2", template="plain", chat_template=False, reward="first_number", embedding="hashed", prompts_per_step=PROMPTS,
    budget=8 * PROMPTS, min_rollouts=4, max_rollouts=16, advantage="rloo", learning_rate=1e-4, warmup_steps=0,
    micro_batch_size=128, generation_batch_size=256, tensorboard=False, progress=False,
)
PROBLEM_SETS = {  # name -> the trainer.tasks families and sizes, and the completion budget
    "mixed": {"families": FAMILIES, "sizes": None, "max_new_tokens": 6},
    "long_reversal": {"families": ("rev",), "sizes": {"rev": tuple(range(8, 17))}, "max_new_tokens": 18},
}
ALLOCATION_RULES = {  # method name -> config fields; the GP rules use the paper's noiseless GP (Algorithm 1)
    "uniform": {"allocation": "uniform"},
    "vip": {"allocation": "vip", "predictor": "gp"},
    "vip_released": {"allocation": "vip_released", "predictor": "gp"},
    "inverse_accuracy": {"allocation": "inverse_accuracy", "predictor": "gp"},
    "ridge": {"allocation": "vip", "predictor": "ridge"},
}
ALLOCATION_METHODS = {
    f"{name}@{q}Q": fields | {"budget": q * PROMPTS, "max_rollouts": 2 * q} for q in (8, 16) for name, fields in ALLOCATION_RULES.items()
}
LOSS_METHODS = {
    "grpo": {"loss": "grpo"},
    "gspo": {"loss": "gspo"},
    "ctpo": {"loss": "ctpo"},
    "ctpo_fixed_clip": {"loss": "ctpo", "ctpo_power": 0.0},
}
COMPARISONS = {
    "allocation": {"claim": "V10", "baseline": "uniform@8Q", "methods": ALLOCATION_METHODS},
    "allocation_dr_grpo": {"claim": "V10", "baseline": "uniform@8Q", "methods": ALLOCATION_METHODS, "common": {"advantage": "dr_grpo"}},
    "loss": {
        "claim": "C8",
        "baseline": "grpo",
        "methods": LOSS_METHODS,
        "common": {"ppo_epochs": 2, "mini_batches": 4},
    },
    "loss_long": {
        "claim": "C8",
        "problems": "long_reversal",
        "baseline": "grpo",
        "methods": LOSS_METHODS,
        "common": {"ppo_epochs": 2, "mini_batches": 4},
    },
    "kl": {
        "claim": "R12",
        "baseline": "no_clip",
        "methods": {
            "no_clip": {"kl_clip": "none"},
            "fixed_tau": {"kl_clip": "fixed", "kl_tau": 1.0},
            "tau_star": {"kl_clip": "tau_star"},
        },
        "common": {"kl_coef": 0.05, "kl_estimator": "k3"},
    },
}
SPLITS = ("test", "train")
METRICS = ("pass@1", "pass@8", "mean@8", "maj@8")


def _data(problems: str):
    """(train, test) of a problem set: the same problems for every seed and method."""
    spec = PROBLEM_SETS[problems]
    rng = np.random.default_rng(0)
    return split(generate_tasks(1200, rng, spec["families"], spec["sizes"]), 0.25, rng)


def problem_set(comparison: str) -> str:
    """The PROBLEM_SETS name a comparison trains on (``mixed`` unless it names one)."""
    return COMPARISONS[comparison].get("problems", "mixed")


def _base(problems: str) -> dict:
    return BASE | {"max_new_tokens": PROBLEM_SETS[problems]["max_new_tokens"]}


def _save_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename, so that a killed study never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write(tmp)
    tmp.replace(path)


def warmed_model(seed: int, problems: str, train, tok, cache: Path, steps: int):
    """The seed's model after ``steps`` of supervised warm-up on the problem set's training
    problems (cached: every method starts from it)."""
    path = cache / f"warmup-{problems}-seed{seed}-steps{steps}.pt"
    model = tiny_model("qwen2", len(tok), seed)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    supervised_warmup(model, tok, train, steps, torch.Generator().manual_seed(seed))
    _save_atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return model


def _evaluations(config, model, tok, test, train, seed: int) -> dict:
    """Pass/Mean/Maj@k on the held-out problems and on the first EVAL_TRAIN training problems."""
    return {
        "test": evaluate(config, test, model, tok, n=8, ks=(1, 8), seed=seed),
        "train": evaluate(config, train[:EVAL_TRAIN], model, tok, n=8, ks=(1, 8), seed=seed),
    }


def warm_start(seed: int, problems: str, out: Path, warmup_steps: int = WARMUP_STEPS) -> dict:
    """Warm up the seed's model (cached) and evaluate it (cached): the point RL starts from."""
    path = out / "warmup" / f"start-{problems}-seed{seed}-steps{warmup_steps}.json"
    if not path.exists():
        train, test = _data(problems)
        tok = task_tokenizer()
        model = warmed_model(seed, problems, train, tok, out / "warmup", warmup_steps)
        result = _evaluations(TrainConfig(**_base(problems)), model, tok, test, train, seed)
        _save_atomic(path, lambda tmp: tmp.write_text(json.dumps(result)))
    return json.loads(path.read_text())


def run_one(comparison: str, method: str, seed: int, steps: int, out: Path, warmup_steps: int = WARMUP_STEPS) -> dict:
    """Train one method from the seed's warmed-up model (``out/warmup``); its learning curve and test metrics."""
    spec = COMPARISONS[comparison]
    problems = problem_set(comparison)
    train, test = _data(problems)
    tok = task_tokenizer()
    run_dir = out / comparison / "runs" / f"{method}-seed{seed}"
    fields = _base(problems) | spec.get("common", {}) | spec["methods"][method] | {"steps": steps, "seed": seed, "output_dir": str(run_dir)}
    config = TrainConfig(**fields)
    model = warmed_model(seed, problems, train, tok, out / "warmup", warmup_steps)
    reference = None
    if config.kl_coef > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # the warmed-up start, frozen
    trainer = Trainer(config, model, tok, train, get_reward("first_number"), reference)
    start = time.perf_counter()
    curve, zero_var, rollouts, clips = [], [], [], []
    for _ in range(steps):
        metrics, _ = trainer.train_step()
        curve.append(metrics["reward/mean"])
        zero_var.append(metrics["zero_variance_groups"])
        rollouts.append(config.rollout_budget * metrics["step"])
        clips.append({key.removeprefix("clip/"): value for key, value in metrics.items() if key.startswith("clip/")})
    return {
        "comparison": comparison, "method": method, "seed": seed, "config": fields, "reward_curve": curve,
        "zero_variance_groups": zero_var, "rollouts_consumed": rollouts, "seconds": time.perf_counter() - start,
        # share of tokens (GSPO: sequences) outside each rule's clip range, mean over the steps' updates
        "clip_fractions": {rule: float(np.mean([c[rule] for c in clips])) for rule in clips[0]},
        **_evaluations(config, model, tok, test, train, seed),
    }


def run_path(out: Path, comparison: str, method: str, seed: int, steps: int, warmup_steps: int) -> Path:
    return out / comparison / f"{method}-seed{seed}-steps{steps}-warmup{warmup_steps}.json"


def run_and_save(comparison: str, method: str, seed: int, steps: int, out: Path, warmup_steps: int) -> Path:
    """One run, saved atomically (a worker's job; finished runs are kept, so a study resumes)."""
    path = run_path(out, comparison, method, seed, steps, warmup_steps)
    if not path.exists():
        result = run_one(comparison, method, seed, steps, out, warmup_steps)
        _save_atomic(path, lambda tmp: tmp.write_text(json.dumps(result)))
    return path


def _interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval over seeds."""
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
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
    by_method = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in spec["methods"]}
    base = {split_name: {r["seed"]: r[split_name]["mean@8"] for r in by_method[spec["baseline"]]} for split_name in SPLITS}
    rows = []
    for method, rs in by_method.items():
        curves = np.array([r["reward_curve"] for r in rs])
        details = {
            "method": method, "baseline": spec["baseline"], "seeds": [r["seed"] for r in rs], "rollouts_consumed": rs[0]["rollouts_consumed"],
            "reward_curve_mean": curves.mean(0).tolist(), "reward_curve_se": (curves.std(0, ddof=1) / np.sqrt(len(rs))).tolist(),
            "zero_variance_mean": float(np.mean([np.mean(r["zero_variance_groups"]) for r in rs])),
        }
        if all("clip_fractions" in r for r in rs):  # runs saved before clip fractions were recorded lack them
            own = rs[0]["config"].get("loss", TrainConfig.loss)
            details["clip_fractions"] = {rule: float(np.mean([r["clip_fractions"][rule] for r in rs])) for rule in rs[0]["clip_fractions"]}
            details["clip_fraction_own"] = details["clip_fractions"][own]
        for split_name in SPLITS:
            for key in METRICS:
                details[f"{split_name}/{key}"], details[f"{split_name}/{key}_ci95"] = _interval([r[split_name][key] for r in rs])
            mine = [r[split_name]["mean@8"] for r in rs]
            details[f"{split_name}/mean@8_per_seed"] = mine
            start = [starts[r["seed"]][split_name]["mean@8"] for r in rs]
            details[f"{split_name}/start_mean@8"], details[f"{split_name}/start_mean@8_per_seed"] = float(np.mean(start)), start
            _paired(details, f"{split_name}/gain_over_start", mine, start)
            if method != spec["baseline"]:
                _paired(details, f"{split_name}/paired_diff", mine, [base[split_name][r["seed"]] for r in rs])
        rows.append(report(spec["claim"], f"study {comparison}, {method}: held-out Mean@8 over {len(rs)} seeds", details, details["test/mean@8"]))
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
        return f"{d[key]:+.3f} ± {d[key + '_ci95']:.3f} ({'< 0.001' if p < 0.001 else f'{p:.3f}' if p < 0.01 else f'{p:.2f}'})"

    clipped = all("clip_fraction_own" in r.details for r in rows)
    header = "| method | training problems Mean@8 | gain over the start (p) | Δ vs baseline (p) | held-out Mean@8 | gain over the start (p) | Δ vs baseline (p) | held-out Pass@8 | held-out Maj@8 | zero-variance groups |"
    header += " clipped (own rule) |" if clipped else ""
    lines = [header, "|" + " --- |" * header.count(" |")]
    for d in (r.details for r in rows):
        cells = [d["method"]]
        for split_name in SPLITS[::-1]:
            cells += [ci(d, f"{split_name}/mean@8"), paired(d, f"{split_name}/gain_over_start"), paired(d, f"{split_name}/paired_diff")]
        cells += [ci(d, "test/pass@8"), ci(d, "test/maj@8"), f"{d['zero_variance_mean']:.2f}"]
        cells += [f"{d['clip_fraction_own']:.4f}"] if clipped else []
        lines.append("| " + " | ".join(cells) + " |")
    start = rows[0].details
    lines.append(f"\nwarmed-up start: training problems Mean@8 {start['train/start_mean@8']:.3f}, held-out {start['test/start_mean@8']:.3f}")
    return "\n".join(lines)


def _pool(jobs: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child of a process that has used torch's thread pool can hang
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads, initargs=(1,))


def run_study(comparisons, seeds: int, steps: int, out: Path, warmup_steps: int, jobs: int) -> dict[str, list[dict]]:
    """Warm-ups first (one per seed, shared by every comparison), then every (comparison,
    method, seed) run; returns the runs of each comparison."""
    wanted = [(c, m, s) for c in comparisons for s in range(seeds) for m in COMPARISONS[c]["methods"]]
    todo = [job for job in wanted if not run_path(out, *job, steps, warmup_steps).exists()]
    with _pool(jobs) as pool:
        starts = [(s, p) for p in dict.fromkeys(map(problem_set, comparisons)) for s in range(seeds)]
        list(tqdm(pool.map(warm_start, *zip(*starts), [out] * len(starts), [warmup_steps] * len(starts)), total=len(starts), desc="warm-up"))
        futures = [pool.submit(run_and_save, c, m, s, steps, out, warmup_steps) for c, m, s in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", initial=len(wanted) - len(todo)):
            future.result()  # a failed run stops the study here; the finished ones stay saved
    return {c: [json.loads(run_path(out, c, m, s, steps, warmup_steps).read_text()) for cc, m, s in wanted if cc == c] for c in comparisons}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/rl_study.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("comparisons", nargs="*", metavar="COMPARISON", help=f"any of {', '.join(COMPARISONS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="records")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.comparisons if c not in COMPARISONS]
    if unknown:
        parser.error(f"COMPARISON must be one of {', '.join(COMPARISONS)}; got {', '.join(unknown)}")
    args.comparisons = args.comparisons or list(COMPARISONS)
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 (the intervals and paired tests are over seeds); got {args.seeds}")
    for name in ("steps", "warmup_steps", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    out = Path(args.out) / "rl_study"
    runs = run_study(args.comparisons, args.seeds, args.steps, out, args.warmup_steps, args.jobs)
    config = {"seeds": args.seeds, "steps": args.steps, "warmup_steps": args.warmup_steps}
    for comparison, comparison_runs in runs.items():
        starts = {s: warm_start(s, problem_set(comparison), out, args.warmup_steps) for s in range(args.seeds)}
        rows = summarise(comparison, comparison_runs, starts)
        print(format_table(rows))
        print(markdown_table(rows))
        check = {"name": f"rl_study_{comparison}", "claims": [COMPARISONS[comparison]["claim"]], "seconds": sum(r["seconds"] for r in comparison_runs), "results": [r.to_json() for r in rows]}
        print(write_record(Path(args.out), f"rl_study_{comparison}", config, 0, [check]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
