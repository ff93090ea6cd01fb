"""A small-scale RL study on the CPU: do the papers' effects appear in real (tiny) training runs?

    python scripts/rl_study.py allocation [--seeds 5] [--steps 150] [--out records]
    python scripts/rl_study.py loss
    python scripts/rl_study.py kl

Setting: the five task families of trainer.tasks (1,200 problems, 25 % held out), a 2-layer
Qwen2-architecture model per seed, warmed up by 800 supervised steps of 64 on the training
problems (trainer.warmup: the training reward starts near 0.6 with per-prompt success spread
over [0, 1]; 500 steps start it near 0.2 with half the groups all-wrong; learning rate 1e-3
RL after a 300-step warm-up on 30 % of them collapsed to deterministic wrong answers); then
every method of the comparison trains from that same warmed-up model (paired by seed) for
``steps`` RL steps of 16 prompts, RLOO advantages, learning rate 1e-4. Comparisons:

- ``allocation``: uniform vs VIP as published (GP + exact allocation) vs VIP as released vs
  inverse accuracy, at C = 8 and 16 rollouts per prompt on average (the 8Q / 16Q analogues);
- ``loss``: GRPO vs GSPO vs CTPO (adaptive sqrt(t) clip) vs CTPO with a fixed clip (p = 0),
  with 2 PPO epochs x 4 mini-batches so that the later updates are off-policy;
- ``kl``: beta = 0.05 with no clip, a fixed tau = 1, and tau*.

Each (method, seed) run is saved as it finishes (``OUT/rl_study/<comparison>/``), so a killed
study resumes where it stopped. The end writes a ledger record (check ``rl_study_<comparison>``,
``report`` rows) with, per method, the learning curve (reward against rollouts consumed), the
zero-variance-group fraction, Pass@1/Pass@8/Mean@8/Maj@8 on the held-out problems and on 300
training problems (the objective RL optimises) with 95 % t intervals over seeds, and a paired
t-test of method - baseline on Mean@8 (same seed = same warmed-up model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
from trainer.tasks import generate_tasks, split, task_tokenizer  # noqa: E402
from trainer.warmup import supervised_warmup  # noqa: E402

PROMPTS = 16
EVAL_TRAIN = 300  # training problems re-evaluated at the end: the objective RL optimises
WARMUP_STEPS = 800
BASE = dict(
    model="tiny:qwen2", template="plain", chat_template=False, reward="first_number", embedding="hashed", prompts_per_step=PROMPTS,
    budget=8 * PROMPTS, min_rollouts=4, max_rollouts=16, max_new_tokens=6, advantage="rloo", learning_rate=1e-4, warmup_steps=0,
    micro_batch_size=128, generation_batch_size=256, tensorboard=False, progress=False,
)
COMPARISONS = {
    "allocation": {
        "baseline": "uniform@8Q",
        "methods": {
            f"{name}@{q}Q": {"allocation": alloc, "budget": q * PROMPTS, "max_rollouts": 2 * q}
            for q in (8, 16)
            for name, alloc in (("uniform", "uniform"), ("vip", "vip"), ("vip_released", "vip_released"), ("inverse_accuracy", "inverse_accuracy"))
        },
    },
    "loss": {
        "baseline": "grpo",
        "methods": {
            "grpo": {"loss": "grpo"},
            "gspo": {"loss": "gspo"},
            "ctpo": {"loss": "ctpo"},
            "ctpo_fixed_clip": {"loss": "ctpo", "ctpo_power": 0.0},
        },
        "common": {"ppo_epochs": 2, "mini_batches": 4},
    },
    "kl": {
        "baseline": "no_clip",
        "methods": {
            "no_clip": {"kl_clip": "none"},
            "fixed_tau": {"kl_clip": "fixed", "kl_tau": 1.0},
            "tau_star": {"kl_clip": "tau_star"},
        },
        "common": {"kl_coef": 0.05, "kl_estimator": "k3"},
    },
}


def _data():
    rng = np.random.default_rng(0)  # the same problems for every seed and method
    return split(generate_tasks(1200, rng), 0.25, rng)


def warmed_model(seed: int, train, tok, cache: Path, steps: int):
    """The seed's model after ``steps`` of supervised warm-up (cached: every method starts from it)."""
    path = cache / f"warmup-seed{seed}-steps{steps}.pt"
    model = tiny_model("qwen2", len(tok), seed)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    supervised_warmup(model, tok, train, steps, torch.Generator().manual_seed(seed))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def run_one(comparison: str, method: str, seed: int, steps: int, out: Path, warmup_steps: int = WARMUP_STEPS) -> dict:
    """Train one method from the seed's warmed-up model; its learning curve and test metrics."""
    train, test = _data()
    tok = task_tokenizer()
    spec = COMPARISONS[comparison]
    fields = BASE | spec.get("common", {}) | spec["methods"][method] | {"steps": steps, "seed": seed, "output_dir": str(out / "runs" / f"{method}-seed{seed}")}
    config = TrainConfig(**fields)
    model = warmed_model(seed, train, tok, out / "warmup", warmup_steps)
    reference = None
    if config.kl_coef > 0:
        reference = warmed_model(seed, train, tok, out / "warmup", warmup_steps).eval().requires_grad_(False)
    trainer = Trainer(config, model, tok, train, get_reward("first_number"), reference)
    start = time.perf_counter()
    curve, zero_var, rollouts = [], [], []
    for _ in range(steps):
        metrics, _ = trainer.train_step()
        curve.append(metrics["reward/mean"])
        zero_var.append(metrics["zero_variance_groups"])
        rollouts.append(config.rollout_budget * metrics["step"])
    return {
        "comparison": comparison, "method": method, "seed": seed, "config": fields, "reward_curve": curve,
        "zero_variance_groups": zero_var, "rollouts_consumed": rollouts, "seconds": time.perf_counter() - start,
        "test": evaluate(config, test, model, tok, n=8, ks=(1, 8), seed=seed),
        "train": evaluate(config, train[:EVAL_TRAIN], model, tok, n=8, ks=(1, 8), seed=seed),
    }


def _interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval over seeds."""
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(half)


def summarise(comparison: str, runs: list[dict]) -> list:
    """``report`` rows: per method its curve and test metrics; paired test against the baseline."""
    spec = COMPARISONS[comparison]
    by_method = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in spec["methods"]}
    base = {split_name: {r["seed"]: r[split_name]["mean@8"] for r in by_method[spec["baseline"]]} for split_name in ("test", "train")}
    rows = []
    for method, rs in by_method.items():
        curves = np.array([r["reward_curve"] for r in rs])
        details = {
            "method": method, "seeds": [r["seed"] for r in rs], "rollouts_consumed": rs[0]["rollouts_consumed"],
            "reward_curve_mean": curves.mean(0).tolist(), "reward_curve_se": (curves.std(0, ddof=1) / np.sqrt(len(rs))).tolist(),
            "zero_variance_mean": float(np.mean([np.mean(r["zero_variance_groups"]) for r in rs])),
        }
        for split_name in ("test", "train"):
            for key in ("pass@1", "pass@8", "mean@8", "maj@8"):
                details[f"{split_name}/{key}"], details[f"{split_name}/{key}_ci95"] = _interval([r[split_name][key] for r in rs])
            mine = np.array([r[split_name]["mean@8"] for r in rs])
            theirs = np.array([base[split_name][r["seed"]] for r in rs])
            if method != spec["baseline"] and len(rs) > 1:
                details[f"{split_name}/paired_diff"], details[f"{split_name}/paired_diff_ci95"] = _interval(mine - theirs)
                details[f"{split_name}/paired_p"] = float(stats.ttest_rel(mine, theirs).pvalue)
        rows.append(report(f"study:{comparison}", f"{method}: held-out Mean@8 over {len(rs)} seeds", details, details["test/mean@8"]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/rl_study.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("comparison", choices=sorted(COMPARISONS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="records")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and two studies can run side by side
    out = Path(args.out) / "rl_study" / args.comparison
    runs = []
    jobs = [(m, s) for s in range(args.seeds) for m in COMPARISONS[args.comparison]["methods"]]
    for method, seed in tqdm(jobs, desc=args.comparison):
        path = out / f"{method}-seed{seed}-steps{args.steps}-warmup{args.warmup_steps}.json"
        if not path.exists():  # resumable: finished runs are kept
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(run_one(args.comparison, method, seed, args.steps, out, args.warmup_steps)))
            tmp.replace(path)
        runs.append(json.loads(path.read_text()))
    rows = summarise(args.comparison, runs)
    print(format_table(rows))
    checks = [{"name": f"rl_study_{args.comparison}", "claims": [f"study:{args.comparison}"], "seconds": sum(r["seconds"] for r in runs), "results": [r.to_json() for r in rows]}]
    print(write_record(Path(args.out), f"rl_study_{args.comparison}", {"seeds": args.seeds, "steps": args.steps, "warmup_steps": args.warmup_steps}, 0, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
