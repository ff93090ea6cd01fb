"""``python trainer/evaluate.py --config CONFIG [--checkpoint DIR] [--set ...] --n 8 --k 1,4,8``

Samples ``n`` completions per held-out problem with the config's model, template, reward,
temperature and rollout engine (``--set rollout_engine=vllm`` on a GPU), and reports Pass@k
(unbiased), Mean@k (= CTPO's avg@k) and Maj@k (VIP §6) for each k <= n as JSON.
``--checkpoint`` loads the model weights of a training checkpoint
(``<output_dir>/checkpoints/step-N``); ``--dataset``/``--split`` name the held-out set.
``rlvr-eval`` and ``python -m trainer.evaluate`` are the same command.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

import write_guard
from trainer.checkpoint import load_checkpoint
from trainer.config import MAX_SEED, load_config
from trainer.data import load_examples, prompt_text
from trainer.engines import build_engine
from trainer.metrics import summarise
from trainer.models import inference_dtype, load_policy, load_tokenizer, resolve_device
from trainer.precision import compute_context
from trainer.rewards import EXTRACTORS, answer_line, boxed, checked_rewards, get_reward
from trainer.rollout import Sampling


def extract(reward: str, completion: str) -> str | None:
    """The answer Maj@k votes on: the reward's own extraction (boxed, then Answer: line, for
    math_verify and custom rewards)."""
    if reward in EXTRACTORS:
        return EXTRACTORS[reward](completion)
    return boxed(completion) or answer_line(completion)


def evaluate(config, examples, policy, tokenizer, n: int, ks, seed: int = 0, prompts_per_batch: int = 16) -> dict:
    """Metrics of ``policy`` on ``examples`` (see the module docstring)."""
    if any(k > n or k < 1 for k in ks):
        raise ValueError(f"every k must lie in [1, n = {n}]; got {list(ks)}")
    reward_fn = get_reward(config.reward)
    engine = build_engine(config, policy, tokenizer, next(policy.parameters()).device)
    every_prompt = [prompt_text(e, config, tokenizer) for e in examples]
    engine.check_prompt_lengths(every_prompt, config.max_new_tokens, [e.prompt_id for e in examples])
    engine.sync_weights(policy)  # vLLM: the checkpoint's weights, not the hub's (a no-op for transformers)
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    sampling = Sampling(config.temperature, config.max_new_tokens)
    correct, answers = [], []
    policy.eval()
    with engine.generating():  # vLLM: one wake-up for every batch, one sleep after the last
        batches = [
            _sample(engine, config, every_prompt[start : start + prompts_per_batch], n, sampling, generator)
            for start in range(0, len(examples), prompts_per_batch)
        ]
    for start, batch in zip(range(0, len(examples), prompts_per_batch), batches):
        chunk = examples[start : start + prompts_per_batch]
        prompts = every_prompt[start : start + prompts_per_batch]
        gold = [chunk[q].answer for q in batch.prompt_index]
        values = (
            np.asarray(checked_rewards(reward_fn, [prompts[q] for q in batch.prompt_index], batch.completions, gold))
            > 0.5
        )
        for q in range(len(chunk)):
            rows = [r for r, p in enumerate(batch.prompt_index) if p == q]
            correct.append(values[rows])
            answers.append([extract(config.reward, batch.completions[r]) for r in rows])
    per_problem = {"mean_per_problem": [float(c.mean()) for c in correct]}  # for paired comparisons
    return {"problems": len(examples), "samples_per_problem": n} | summarise(correct, answers, ks) | per_problem


def _sample(engine, config, prompts, n: int, sampling: Sampling, generator: torch.Generator):
    """``n`` completions of each prompt, in the config's compute precision."""
    with compute_context(generator.device, config.cpu_bf16):
        return engine.generate(prompts, [n] * len(prompts), sampling, generator)


def k_values(text: str) -> list[int]:
    """``--k``: comma-separated integers >= 1."""
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, e.g. 1,4,8; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1; got {text!r}")
    return ks


def load_weights(policy, checkpoint, model: str) -> None:
    """The model weights of ``checkpoint`` into ``policy``; a ValueError when they are of another
    architecture (torch's load_state_dict lists every mismatched tensor)."""
    try:
        policy.load_state_dict(load_checkpoint(checkpoint)["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ValueError(
            f"--checkpoint {checkpoint} holds the weights of another model than the config's {model!r} ({first});"
            " give the config the checkpoint was trained with"
        ) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Pass@k, Mean@k (avg@k) and Maj@k of a model on held-out problems.")
    parser.add_argument("--config", help="the training config (model, template, reward, sampling)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--checkpoint", help="a checkpoint directory whose model weights to load")
    parser.add_argument("--dataset", help="held-out dataset (default: the config's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=8, help="samples per problem")
    parser.add_argument("--k", type=k_values, default="1,4,8", help="comma-separated k values, each <= n")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", help="write the metrics JSON here as well (checked before anything loads)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file (moved aside first)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be an integer >= 1; got {args.n}")
    if max(args.k) > args.n:
        parser.error(f"--k: every k must be <= --n = {args.n} (pass@k needs k of n samples); got {max(args.k)}")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must be an integer in [0, 2**62]; got {args.seed}")
    try:
        if args.out:
            inputs = [args.config, args.dataset, args.checkpoint]
            write_guard.check_file(args.out, "--out", inputs=inputs, overwrite=args.overwrite)
        config = load_config(args.config, args.set)
        ks = args.k
        dataset = args.dataset or config.dataset
        examples = load_examples(
            dataset,
            args.split,
            config.prompt_column,
            config.answer_column,
            config.max_prompts,
            np.random.default_rng(args.seed),
        )
        tokenizer = load_tokenizer(config.model)
        device = resolve_device(config.device)
        policy = load_policy(config.model, device, inference_dtype(device), len(tokenizer), config.seed)
        if args.checkpoint:
            load_weights(policy, args.checkpoint, config.model)
        result = evaluate(config, examples, policy, tokenizer, args.n, ks, args.seed)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        try:
            previous = write_guard.write_file(args.out, text + "\n")
        except OSError as exc:  # e.g. a full disk; the metrics are on stdout
            print(f"error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if previous is not None:
            print(f"the previous {args.out} was moved to {previous}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
