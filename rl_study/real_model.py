"""A real pretrained model trained on a CPU: does SmolLM2-135M-Instruct learn, and do VIP and CTPO
change what it learns?

    python -m rl_study.real_model [--arms uniform vip ctpo] [--seeds 3] [--steps 30] [--out records]

Every arm trains trainer/configs/smollm2_cpu.yaml (80 mixed-arithmetic chat problems, 16
prompts x 8 rollouts a step, Dr. GRPO advantages, GRPO loss, lr 1e-5) with one change:

- ``uniform``: as configured (8 rollouts per prompt);
- ``vip``: ``allocation=vip`` (VIP's GP predictor and rule, the same budget of 128, 4 to 16 per prompt);
- ``ctpo``: ``loss=ctpo_released`` (the CTPO form the README recommends: the released code's).

Each (arm, seed) is one ``python -m trainer.run --resume`` process for ``--steps`` steps (its
progress bar, its run folder ``OUT/real_model/<arm>-seed<s>/``, one checkpoint at the end: a
killed study reuses the finished runs and evaluations and starts the interrupted run again). Then the
pretrained model and each run's final checkpoint are evaluated on the same problems with the
same sampling seed: Mean@8 on the run's 80 training problems (the objective RL optimises; a
synthetic task is drawn with the run's seed) and on 80 held-out problems, another draw of the
same families (easy problems may repeat: there are 100 one-digit sums). Every result is saved as
it finishes, atomically.

The study writes a ledger record (check ``rl_study_real_model``, ``report`` rows, no pass/fail):
per run, the paired gain in Mean@8 over the pretrained model with a 95 % t interval over the
problems; per arm, the mean gain over seeds with a t interval over seeds; VIP - uniform and
CTPO - uniform paired by seed and problem; the per-step reward and entropy for the figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from simulators.ledger import format_table, report, write_record

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "smollm2_cpu.yaml"
ARMS = {
    "uniform": [],
    "vip": ["allocation=vip"],
    "ctpo": ["loss=ctpo_released"],
}
EVAL_SEED = 1234  # the same samples' random numbers for every model (common random numbers)
HELD_OUT_SEED = 99  # the held-out problems: another draw of the same families
EVAL_N = 8


def run_folder(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}-seed{seed}"


def train(out: Path, arm: str, seed: int, steps: int) -> Path:
    """Train (or finish training) one arm and seed with the trainer's own command line."""
    folder = run_folder(out, arm, seed)
    overrides = [f"seed={seed}", f"steps={steps}", f"save_every={steps}", f"output_dir={folder}"] + ARMS[arm]
    command = [sys.executable, "-m", "trainer.run", "--config", str(CONFIG), "--resume"]
    command += [item for o in overrides for item in ("--set", o)]
    subprocess.run(command, check=True)
    return folder


def _save_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def evaluation(out: Path, name: str, seed: int, checkpoint: Path | None) -> dict:
    """Per-problem success rates over EVAL_N samples of the pretrained model (``checkpoint``
    None) or a checkpoint, on the problems a run of ``seed`` trains on (trainer.run draws a
    synthetic task with the run's seed) and on the held-out problems; cached in OUT."""
    path = out / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from trainer.checkpoint import load_checkpoint
    from trainer.config import load_config
    from trainer.data import load_examples
    from trainer.evaluate import evaluate
    from trainer.models import load_policy, load_tokenizer

    config = load_config(CONFIG)
    tokenizer = load_tokenizer(config.model)
    policy = load_policy(config.model, torch.device("cpu"), torch.float32, len(tokenizer))
    if checkpoint is not None:
        policy.load_state_dict(load_checkpoint(checkpoint)["model"])
    result = {}
    for split, problems_seed in (("train", seed), ("held_out", HELD_OUT_SEED)):
        rng = np.random.default_rng(problems_seed)
        examples = load_examples(config.dataset, max_prompts=config.max_prompts, rng=rng)
        metrics = evaluate(config, examples, policy, tokenizer, EVAL_N, [1, EVAL_N], EVAL_SEED)
        result[split] = metrics["mean_per_problem"]
    _save_json(path, result)
    return result


def curves(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "reward": [r["reward/mean"] for r in rows],
        "entropy": [r.get("entropy") for r in rows],
        "seconds": [r["time/total"] for r in rows],
    }


def t_interval(values) -> tuple[float, float, float]:
    """(mean, half-width of the 95 % t interval, two-sided p of mean = 0)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or values.std() == 0:
        return mean, float("nan"), float("nan")
    result = stats.ttest_1samp(values, 0.0)
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, half, float(result.pvalue)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_study.real_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="records")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 (the intervals over seeds); got {args.seeds}")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1; got {args.steps}")
    out = Path(args.out) / "real_model"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        base, finals = study(out, args.arms, args.seeds, args.steps)
    except (ImportError, ValueError, FileNotFoundError) as exc:  # the model or its extra is missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"error: a training run stopped with exit status {exc.returncode} (its message is above)", file=sys.stderr
        )
        return 1
    rows = summary_rows(base, finals, args.arms, args.seeds)
    print(format_table(rows))
    check = {
        "name": "rl_study_real_model",
        "claims": ["V10", "C8"],
        "seconds": time.perf_counter() - start,
        "results": [r.to_json() for r in rows],
    }
    config = {"arms": args.arms, "seeds": args.seeds, "steps": args.steps, "config": CONFIG.name}
    print(f"record: {write_record(Path(args.out), 'rl_study_real_model', config, 0, [check])}")
    return 0


def study(out: Path, arms, seeds: int, steps: int):
    """The pretrained model's evaluation per seed, then every (seed, arm) run and its evaluation,
    seed by seed, so that an interrupted study has whole seeds; finished pieces are reused."""
    base = {seed: evaluation(out, f"pretrained-seed{seed}", seed, None) for seed in range(seeds)}
    finals = {}
    for seed in range(seeds):
        for arm in arms:
            folder = train(out, arm, seed, steps)
            checkpoint = folder / "checkpoints" / f"step-{steps}"
            finals[arm, seed] = (evaluation(out, f"{arm}-seed{seed}", seed, checkpoint), curves(folder))
    return base, finals


def summary_rows(base: dict, finals: dict, arms, seeds: int) -> list:
    rows = []
    for arm in arms:
        gains = []
        for seed in range(seeds):
            result, curve = finals[arm, seed]
            diff = np.subtract(result["train"], base[seed]["train"])
            mean, half, p = t_interval(diff)
            held = t_interval(np.subtract(result["held_out"], base[seed]["held_out"]))
            gains.append(mean)
            details = {
                "arm": arm,
                "seed": seed,
                "train_mean_at_8": float(np.mean(result["train"])),
                "pretrained_train_mean_at_8": float(np.mean(base[seed]["train"])),
                "train_gain": mean,
                "train_gain_ci95": half,
                "train_gain_p": p,
                "held_out_gain": held[0],
                "held_out_gain_ci95": held[1],
                "held_out_gain_p": held[2],
                "curve": curve,
            }
            what = f"{arm}, seed {seed}: Mean@8 gain on the training problems over the pretrained model (paired)"
            rows.append(report("V10" if arm == "vip" else "C8", what, details, estimate=mean, se=half / 1.96))
        mean, half, p = t_interval(gains)
        what = f"{arm}: mean gain over {seeds} seeds, t interval over seeds"
        rows.append(report("V10", what, {"arm": arm, "gains": gains, "ci95": half, "p": p}, estimate=mean))
    for arm, claim_id in (("vip", "V10"), ("ctpo", "C8")):
        if arm not in arms or "uniform" not in arms:
            continue
        diffs = [np.subtract(finals[arm, s][0]["train"], finals["uniform", s][0]["train"]) for s in range(seeds)]
        per_seed = [float(d.mean()) for d in diffs]
        mean, half, p = t_interval(np.concatenate(diffs))
        details = {"per_seed": per_seed, "ci95_over_problems": half, "p_over_problems": p}
        what = f"{arm} - uniform: final Mean@8 on the training problems, paired by seed and problem"
        rows.append(report(claim_id, what, details, estimate=mean, se=half / 1.96))
    return rows


if __name__ == "__main__":
    sys.exit(main())
