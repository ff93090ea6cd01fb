"""Running the study: the warm-ups and every (comparison, method, seed) run, each saved as it
finishes (atomically), so that a killed study resumes where it stopped; runs go to worker
processes, and a run's result does not depend on their number."""

from __future__ import annotations

import copy
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rl_study.comparisons import BASE, COMPARISONS, PROBLEM_SETS, WARMUP_STEPS, problem_set
from rl_study.tasks import generate_tasks, split, task_tokenizer
from rl_study.warmup import supervised_warmup
from trainer.config import TrainConfig
from trainer.evaluate import evaluate
from trainer.loop import Trainer
from trainer.models import tiny_model
from trainer.rewards import get_reward

EVAL_TRAIN = 300  # training problems re-evaluated at the end: the objective RL optimises


def _data(problems: str):
    """(train, test) of a problem set: the same problems for every seed and method."""
    spec = PROBLEM_SETS[problems]
    rng = np.random.default_rng(0)
    return split(generate_tasks(1200, rng, spec["families"], spec["sizes"]), 0.25, rng)


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
    fields = _base(problems) | spec.get("common", {}) | spec["methods"][method]
    fields |= {"steps": steps, "seed": seed, "output_dir": str(run_dir)}
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
        # rollouts generated so far: C per step, more under a selection that rolls out again (DAPO)
        generated = metrics.get("selection/rollouts_generated", config.rollout_budget)
        rollouts.append((rollouts[-1] if rollouts else 0) + generated)
        clips.append({key.removeprefix("clip/"): value for key, value in metrics.items() if key.startswith("clip/")})
    return {
        "comparison": comparison,
        "method": method,
        "seed": seed,
        "config": fields,
        "reward_curve": curve,
        "zero_variance_groups": zero_var,
        "rollouts_consumed": rollouts,
        "seconds": time.perf_counter() - start,
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


def _pool(jobs: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked child of a process that has used torch's thread pool can hang
    spawn = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(jobs, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,))


def study_methods(comparison: str, only=None) -> list[str]:
    """The methods of ``comparison`` to run: all, or those of ``only`` it has plus its baseline."""
    spec = COMPARISONS[comparison]
    if only is None:
        return list(spec["methods"])
    return [m for m in spec["methods"] if m in only or m == spec["baseline"]]


def run_study(
    comparisons, seeds: int, steps: int, out: Path, warmup_steps: int, jobs: int, methods=None
) -> dict[str, list[dict]]:
    """Warm-ups first (one per seed, shared by every comparison), then every (comparison,
    method, seed) run, for the methods :func:`study_methods` selects; returns the runs of each
    comparison."""
    wanted = [(c, m, s) for c in comparisons for s in range(seeds) for m in study_methods(c, methods)]
    todo = [job for job in wanted if not run_path(out, *job, steps, warmup_steps).exists()]
    with _pool(jobs) as pool:
        starts = [(s, p) for p in dict.fromkeys(map(problem_set, comparisons)) for s in range(seeds)]
        warmed = pool.map(warm_start, *zip(*starts), [out] * len(starts), [warmup_steps] * len(starts))
        list(tqdm(warmed, total=len(starts), desc="warm-up"))
        futures = [pool.submit(run_and_save, c, m, s, steps, out, warmup_steps) for c, m, s in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", initial=len(wanted) - len(todo)):
            future.result()  # a failed run stops the study here; the finished ones stay saved
    return {
        c: [json.loads(run_path(out, c, m, s, steps, warmup_steps).read_text()) for cc, m, s in wanted if cc == c]
        for c in comparisons
    }
