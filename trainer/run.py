"""``python trainer/run.py --config trainer/configs/tiny_cpu.yaml [--set name=value ...] [--resume | --overwrite]``
(or ``torchrun --nproc_per_node N trainer/run.py ...`` for N processes: trainer.distributed).
``rlvr-train`` and ``python -m trainer.run`` are the same command. The script form imports the
installed packages (``pip install -e .``).

Builds a run from a config and trains it. Every check that can fail does so before the first
step: the config (types, ranges, names, budget feasibility, L >= 3 with VIP), the output folder
(writable, not in use, holding no other run unless --resume with a compatible config or
--overwrite: trainer.run_folder), all before the model loads; then the tokenizer, the dataset
(not empty, no null or empty prompt or answer, enough prompts for a step) and the reward function
(called on a few of the dataset's own answers and on a wrong one: one finite number per
completion within reward_timeout_s, 0 or 1 when the allocation or the selection learns success rates).

Exit status: 0 done; 2 refused before training (bad config, folder, model, data, reward; a
resume on a changed dataset, or whose logs do not reach its checkpoint: trainer.logs);
1 stopped during training (a non-finite loss, gradient or logits, a reward function that fails,
returns a bad value or hangs, a failed write, no usable
checkpoint to resume from, a selection that kept too few groups), with the newest checkpoint
left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from trainer import distributed
from trainer.checkpoint import CheckpointError, ResumeError, latest_checkpoint
from trainer.config import TrainConfig, load_config
from trainer.cpu_memory import keep_freed_memory
from trainer.data import load_examples
from trainer.disk import WriteError
from trainer.distributed import World
from trainer.engines import engine_of
from trainer.loop import DivergenceError, StoppedByRankZero, Trainer
from trainer.models import (
    enable_activation_checkpointing,
    inference_dtype,
    load_policy,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from trainer.rewards import RewardError, checked_rewards, get_reward
from trainer.run_folder import RunFolderError, claim
from trainer.selection import SelectionError

PREFLIGHT_WRONG = "I do not know."  # a completion no reward should score as correct


def preflight_reward(reward_fn, examples, config: TrainConfig) -> None:
    """Call the reward on a few examples, each with its answer and with a wrong completion,
    under the run's checks (trainer.rewards.checked_rewards): both values must be acceptable."""
    sample = [e for e in examples[:4] for _ in range(2)]
    completions = [f"Answer: {e.answer}" if k % 2 == 0 else PREFLIGHT_WRONG for k, e in enumerate(sample)]
    checked_rewards(
        reward_fn,
        [e.question for e in sample],
        completions,
        [e.answer for e in sample],
        timeout_s=config.reward_timeout_s,
        rows=[e.prompt_id for e in sample],
        binary=config.binary_rewards,
    )


def build_trainer(config: TrainConfig, world: World = World()) -> Trainer:
    """Everything a run needs, checked before any training (see the module docstring); with
    several processes the policy and the reference are sharded by FSDP2."""
    import numpy as np

    reward_fn = get_reward(config.reward)
    engine = engine_of(config)
    engine.available()  # before any model loads
    tokenizer = load_tokenizer(config.model)
    examples = load_examples(
        config.dataset,
        config.split,
        config.prompt_column,
        config.answer_column,
        config.max_prompts,
        np.random.default_rng(config.seed),
    )
    if len(examples) < config.prompts_per_step:
        raise ValueError(f"prompts_per_step = {config.prompts_per_step} exceeds the dataset's {len(examples)} prompts")
    preflight_reward(reward_fn, examples, config)
    device = world.device if world.size > 1 else resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if device.type == "cpu" and config.cpu_keep_freed_memory:
        keep_freed_memory()
    policy = load_policy(config.model, device, dtype, len(tokenizer), config.seed)
    reference = None
    if config.kl_coef > 0:
        reference = (
            load_policy(config.ref_model or config.model, device, inference_dtype(device), len(tokenizer), config.seed)
            .eval()
            .requires_grad_(False)
        )
    if world.size > 1:
        policy = distributed.shard(policy, world, config.activation_checkpointing)
        reference = reference and distributed.shard(reference, world)
    elif config.activation_checkpointing:
        enable_activation_checkpointing(policy)
    return Trainer(
        config,
        policy,
        tokenizer,
        examples,
        reward_fn,
        reference,
        engine=engine.build(config, policy, tokenizer, device, world),
        world=world,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="RL training of a causal LM with verifiable rewards (GRPO, Dr. GRPO, RLOO, GSPO, CTPO, VIP)."
    )
    parser.add_argument("--config", help="YAML config (trainer/configs/*.yaml); fields not given keep their defaults")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override one config field (repeatable)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run in output_dir (moved to <output_dir>.replaced-<time>)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set + (["progress=false"] if args.no_progress else []))
        world = distributed.setup(config.device)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _claim_and_train(config, world, args.resume, args.overwrite)
    finally:
        distributed.teardown()


def _claim(config: TrainConfig, world: World, resume: bool, overwrite: bool):
    """Rank 0 claims the output folder (trainer.run_folder.claim); every rank learns whether it
    refused before any other collective work, so that all of them stop together."""
    folder = refusal = None
    if world.main:
        try:
            folder = claim(config, resume, overwrite)
        except (RunFolderError, WriteError) as exc:
            refusal = str(exc)
    refusal = distributed.broadcast(refusal, world)
    if refusal is not None:
        raise RunFolderError(refusal)
    if folder is not None and folder.replaced is not None:
        print(f"--overwrite: the previous run of {config.output_dir} was moved to {folder.replaced}", file=sys.stderr)
    return folder or contextlib.nullcontext()


def _claim_and_train(config: TrainConfig, world: World, resume: bool, overwrite: bool) -> int:
    try:
        folder = _claim(config, world, resume, overwrite)
    except RunFolderError as exc:
        if world.main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    with folder:  # the lock is held until the run ends
        try:
            trainer = build_trainer(config, world)
        except (ValueError, FileNotFoundError, KeyError, ImportError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            return _train(trainer, config, world, resume)
        except ResumeError as exc:  # before any step, with nothing in the folder changed
            if world.main:
                print(f"error: {exc}", file=sys.stderr)
            return 2
        except (DivergenceError, WriteError, CheckpointError, SelectionError, RewardError) as exc:
            if world.main:
                newest = latest_checkpoint(config.output_dir)
                print(f"error: {exc}\nthe newest checkpoint: {newest or 'none'}", file=sys.stderr)
            return 1
        except StoppedByRankZero:  # rank 0 prints why
            return 1


def _train(trainer: Trainer, config: TrainConfig, world: World, resume: bool) -> int:
    resumed = resume and trainer.resume()
    if resume and not resumed and world.main:
        print(f"no checkpoint in {config.output_dir}; starting at step 0", file=sys.stderr)
    history = trainer.train(resumed=resumed)
    if history:
        last = history[-1]
        print(
            f"step {last['step']}: reward {last['reward/mean']:.3f}; "
            f"metrics in {Path(config.output_dir) / 'metrics.jsonl'}"
        )
    elif world.main:
        done = f"{config.output_dir} is at step {trainer.step} and steps = {config.steps}: nothing to do"
        print(done, file=sys.stderr)
    return 0


def cli() -> None:
    """The ``rlvr-train`` console script: :func:`main`'s status becomes the process's exit status
    through trainer.distributed.exit_process, which a torchrun worker must leave by."""
    distributed.exit_process(main())


if __name__ == "__main__":
    cli()
