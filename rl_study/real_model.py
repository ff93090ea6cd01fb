"""A real pretrained model trained on a CPU: does SmolLM2-135M-Instruct learn, and do VIP and CTPO
change what it learns?

    python -m rl_study.real_model [--arms ARM ...] [--seeds N ...] [--steps 30] [--out records]

Every arm trains trainer/configs/smollm2_cpu.yaml (80 mixed-arithmetic chat problems, 16
prompts x 8 rollouts a step, Dr. GRPO advantages, GRPO loss, lr 1e-5) with one change:

- ``uniform``: as configured (8 rollouts per prompt, one optimizer step per step: on-policy);
- ``vip``: ``allocation=vip`` (VIP's GP predictor and rule, the same budget of 128, 4 to 16 per prompt);
- ``ctpo``: ``loss=ctpo_released`` (the CTPO form the README recommends: the released code's).
  On-policy its gradient is the token ratio's, so it is GRPO's run to the bit: the record
  says whether the runs are identical;
- ``grpo_offpolicy`` and ``ctpo_offpolicy``: the two losses with ``mini_batches=4`` (four optimizer
  steps per step, so the later mini-batches are off-policy and the ratios and clips matter).

``--seeds`` counts per arm default to DEFAULT_SEEDS (2 for uniform and vip, 1 for the others).

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
problems; per arm, the mean gain over seeds with a t interval over seeds (none for one seed); the
differences of COMPARED, paired by seed and problem; the per-step reward and entropy for the figure.
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

import write_guard
from simulators.ledger import format_table, report, write_record

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "smollm2_cpu.yaml"
ARMS = {
    "uniform": [],
    "vip": ["allocation=vip"],
    "ctpo": ["loss=ctpo_released"],
    "grpo_offpolicy": ["mini_batches=4"],
    "ctpo_offpolicy": ["loss=ctpo_released", "mini_batches=4"],
}
DEFAULT_SEEDS = {"uniform": 2, "vip": 2, "ctpo": 1, "grpo_offpolicy": 1, "ctpo_offpolicy": 1}
CLAIM_OF = {"uniform": "V10", "vip": "V10", "ctpo": "C8", "grpo_offpolicy": "C8", "ctpo_offpolicy": "C8"}
# (arm, its baseline): the differences the record reports
COMPARED = (("vip", "uniform"), ("ctpo", "uniform"), ("ctpo_offpolicy", "grpo_offpolicy"))
EVAL_SEED = 1234  # the same samples' random numbers for every model (common random numbers)
HELD_OUT_SEED = 99  # the held-out problems: another draw of the same families
EVAL_N = 8


def run_folder(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}-seed{seed}"


def train(out: Path, arm: str, seed: int, steps: int) -> None:
    """Train one arm and seed with the trainer's own command line (``--resume``: a run folder
    left by a killed study is resumed from its checkpoint, if it has one, or restarted)."""
    folder = run_folder(out, arm, seed)
    overrides = [f"seed={seed}", f"steps={steps}", f"save_every={steps}", f"output_dir={folder}"] + ARMS[arm]
    command = [sys.executable, "-m", "trainer.run", "--config", str(CONFIG), "--resume"]
    command += [item for o in overrides for item in ("--set", o)]
    subprocess.run(command, check=True)


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
    parser.add_argument("--seeds", type=int, nargs="+", help="one count, or one per arm (default: DEFAULT_SEEDS)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="records")
    args = parser.parse_args(argv)
    counts = args.seeds or [DEFAULT_SEEDS[arm] for arm in args.arms]
    if len(counts) not in (1, len(args.arms)):
        parser.error(f"--seeds takes one count or one per arm ({len(args.arms)}); got {len(counts)}")
    seeds = dict(zip(args.arms, counts * len(args.arms) if len(counts) == 1 else counts))
    if min(seeds.values()) < 1 or args.steps < 1:
        parser.error(f"--seeds and --steps must be >= 1; got {args.seeds} and {args.steps}")
    try:  # before the first run: its runs, evaluations and record go there
        write_guard.check_records_folder(args.out, "--out")
    except write_guard.OutputError as exc:
        parser.error(str(exc))
    out = Path(args.out) / "real_model"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        base, finals = study(out, seeds, args.steps)
    except (ImportError, ValueError, FileNotFoundError) as exc:  # the model or its extra is missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"error: a training run stopped with exit status {exc.returncode} (its message is above)", file=sys.stderr
        )
        return 1
    rows = summary_rows(base, finals, seeds)
    print(format_table(rows))
    check = {
        "name": "rl_study_real_model",
        "claims": ["V10", "C8"],
        "seconds": time.perf_counter() - start,
        "results": [r.to_json() for r in rows],
    }
    config = {"seeds": seeds, "steps": args.steps, "config": CONFIG.name}
    print(f"record: {write_record(Path(args.out), 'rl_study_real_model', config, 0, [check])}")
    return 0


def study(out: Path, seeds: dict, steps: int):
    """The pretrained model's evaluation per seed, then every (seed, arm) run and its evaluation,
    seed by seed (``seeds[arm]`` of each arm), so that an interrupted study has whole seeds;
    finished pieces are reused."""
    base = {seed: evaluation(out, f"pretrained-seed{seed}", seed, None) for seed in range(max(seeds.values()))}
    finals = {}
    for seed in range(max(seeds.values())):
        for arm in (arm for arm, count in seeds.items() if seed < count):
            folder = run_folder(out, arm, seed)
            checkpoint = folder / "checkpoints" / f"step-{steps}"
            if not checkpoint.is_dir():
                train(out, arm, seed, steps)
            finals[arm, seed] = (evaluation(out, f"{arm}-seed{seed}", seed, checkpoint), curves(folder))
    return base, finals


def _same_run(curve: dict, other: dict) -> bool:
    """Whether two runs' per-step rewards and entropies are equal (their timings never are)."""
    return curve["reward"] == other["reward"] and curve["entropy"] == other["entropy"]


def summary_rows(base: dict, finals: dict, seeds: dict) -> list:
    """Per run, the paired gain over the pretrained model; per arm, the gains over seeds; per
    pair of :data:`COMPARED` arms, their difference paired by seed and problem."""
    rows = []
    for arm, count in seeds.items():
        gains = []
        for seed in range(count):
            result, curve = finals[arm, seed]
            mean, half, p = t_interval(np.subtract(result["train"], base[seed]["train"]))
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
                "held_out_mean_at_8": float(np.mean(result["held_out"])),
                "pretrained_held_out_mean_at_8": float(np.mean(base[seed]["held_out"])),
                "held_out_gain": held[0],
                "held_out_gain_ci95": held[1],
                "held_out_gain_p": held[2],
                "curve": curve,
            }
            what = f"{arm}, seed {seed}: Mean@8 gain on the training problems over the pretrained model (paired)"
            rows.append(report(CLAIM_OF[arm], what, details, estimate=mean, se=half / 1.96))
        mean, half, p = t_interval(gains)
        what = f"{arm}: mean gain over {count} seed(s), t interval over seeds"
        rows.append(report(CLAIM_OF[arm], what, {"arm": arm, "gains": gains, "ci95": half, "p": p}, estimate=mean))
    for arm, baseline in COMPARED:
        common = range(min(seeds.get(arm, 0), seeds.get(baseline, 0)))
        if not common:
            continue
        diffs = [np.subtract(finals[arm, s][0]["train"], finals[baseline, s][0]["train"]) for s in common]
        mean, half, p = t_interval(np.concatenate(diffs))
        details = {
            "arm": arm,
            "baseline": baseline,
            "per_seed": [float(d.mean()) for d in diffs],
            "identical_runs": [_same_run(finals[arm, s][1], finals[baseline, s][1]) for s in common],
            "ci95_over_problems": half,
            "p_over_problems": p,
        }
        what = f"{arm} - {baseline}: final Mean@8 on the training problems, paired by seed and problem"
        rows.append(report(CLAIM_OF[arm], what, details, estimate=mean, se=half / 1.96))
    return rows


if __name__ == "__main__":
    sys.exit(main())
