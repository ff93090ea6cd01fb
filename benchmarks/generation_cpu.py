"""Generation and training-step time of a real model on a CPU, every variant measured in one run.

    python -m benchmarks.generation_cpu [--model smollm2-135m-instruct] [--prompts 16] [--rollouts 8]
        [--new-tokens 16] [--repeats 2]

On the same batch of chat prompts (synthetic:mixed_arithmetic, the assistant's turn pre-filled,
an empty system prompt), times
1. sampling ``prompts`` x ``rollouts`` completions of at most ``new-tokens`` tokens with
   - the engine prefilling every rollout's prompt, float32 (the baseline),
   - the engine prefilling each prompt once and sharing its KV cache, float32,
   - the same with bfloat16 autocast (where the CPU runs bfloat16 natively),
   - ``transformers``' own ``model.generate`` (sampling, ``num_return_sequences=rollouts``);
2. one training step of trainer/configs/smollm2_cpu.yaml at that batch (generation, reward,
   log-probs, update): float32 with every rollout's prompt run on its own (``share_prompts=false``,
   the baseline), against bfloat16 with each prompt run once for its rollouts, in sampling and
   in training.

Prints seconds (the median of ``repeats``), generated tokens per second, and each time's ratio
to the baseline. The numbers are this machine's; ``OMP_NUM_THREADS`` sets the cores used.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from trainer.config import load_config
from trainer.data import load_examples, prompt_text
from trainer.loop import Trainer
from trainer.models import load_policy, load_tokenizer
from trainer.precision import compute_context, cpu_has_native_bf16
from trainer.rewards import get_reward
from trainer.rollout import Sampling, TransformersEngine

CONFIG = "trainer/configs/smollm2_cpu.yaml"


def median_time(work, repeats: int):
    """(median seconds, the last result) of ``repeats`` calls of ``work``."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def engine_run(model, tokenizer, prompts, rollouts, sampling, share: bool, cpu_bf16: str):
    engine = TransformersEngine(model, tokenizer, batch_size=len(prompts) * rollouts, share_prompt_cache=share)

    def work():
        with compute_context(torch.device("cpu"), cpu_bf16):
            batch = engine.generate(prompts, [rollouts] * len(prompts), sampling, torch.Generator().manual_seed(0))
        return int(batch.completion_mask.sum())

    return work


def hf_generate_run(model, tokenizer, prompts, rollouts, sampling):
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)

    @torch.no_grad()
    def work():
        torch.manual_seed(0)  # generate draws from torch's global generator
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=sampling.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=rollouts,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        completion = out[:, enc["input_ids"].shape[1] :]
        finished = (completion == tokenizer.eos_token_id).cumsum(1)
        return int(((finished == 0) | ((finished == 1) & (completion == tokenizer.eos_token_id))).sum())

    return work


def step_run(config, policy, tokenizer, examples):
    trainer = Trainer(config, policy, tokenizer, examples, get_reward(config.reward))
    return lambda: trainer.train_step()[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation_cpu")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    config = load_config(
        CONFIG,
        [
            f"model={args.model}",
            f"prompts_per_step={args.prompts}",
            f"budget={args.prompts * args.rollouts}",
            f"max_new_tokens={args.new_tokens}",
            "progress=false",
            "tensorboard=false",
            "output_dir=/nonexistent",  # the step is not saved
        ],
    )
    tokenizer = load_tokenizer(config.model)
    start = time.perf_counter()
    policy = load_policy(config.model, torch.device("cpu"), torch.float32, len(tokenizer))
    print(f"{config.model}: loaded in {time.perf_counter() - start:.1f} s; {torch.get_num_threads()} threads")
    examples = load_examples(config.dataset, max_prompts=config.max_prompts, rng=np.random.default_rng(0))
    prompts = [prompt_text(e, config, tokenizer) for e in examples[: args.prompts]]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(
        f"{args.prompts} prompts x {args.rollouts} rollouts, <= {args.new_tokens} new tokens; prompt tokens {lengths}"
    )
    sampling = Sampling(config.temperature, args.new_tokens)
    bf16 = "on" if cpu_has_native_bf16() else None
    policy.eval()
    runs = {
        "engine, unshared prefill, fp32 (baseline)": engine_run(
            policy, tokenizer, prompts, args.rollouts, sampling, False, "off"
        ),
        "engine, shared prefill, fp32": engine_run(policy, tokenizer, prompts, args.rollouts, sampling, True, "off"),
    }
    if bf16:
        runs["engine, shared prefill, bf16 autocast"] = engine_run(
            policy, tokenizer, prompts, args.rollouts, sampling, True, "on"
        )
    runs["transformers generate, fp32"] = hf_generate_run(policy, tokenizer, prompts, args.rollouts, sampling)
    print(f"\n{'generation':<44} {'seconds':>8} {'tokens/s':>9} {'vs baseline':>12}")
    baseline = None
    for name, work in runs.items():
        seconds, tokens = median_time(work, args.repeats)
        baseline = baseline or seconds
        print(f"{name:<44} {seconds:8.2f} {tokens / seconds:9.1f} {seconds / baseline:11.2f}x")
    steps = {"step, unshared prefill, fp32 (baseline)": (False, "off")}
    if bf16:
        steps["step, shared prefill, bf16 autocast"] = (True, "on")
    else:
        steps["step, shared prefill, fp32"] = (True, "off")
    print(f"\n{'training step (policy updated each time)':<44} {'seconds':>8} {'generation':>11} {'update':>8}")
    baseline = None
    for name, (share, mode) in steps.items():
        config.share_prompts, config.cpu_bf16 = share, mode
        seconds, metrics = median_time(step_run(config, policy, tokenizer, examples), args.repeats)
        baseline = baseline or seconds
        print(
            f"{name:<44} {seconds:8.2f} {metrics['time/generation']:11.2f} {metrics['time/update']:8.2f}"
            f"   {seconds / baseline:.2f}x"
        )


if __name__ == "__main__":
    main()
