"""A SmolLM2 training step against this machine's FLOP bound, phase by phase, measured in one run.

    python -m benchmarks.step_cpu [--prompts 16] [--rollouts 8] [--new-tokens 16] [--repeats 2]
        [--profile 12]

1. **Trainer.train_step** (median of ``repeats`` after two warm-up steps) with each change's gain
   over the baseline, the step with its own gradient-free pass for the old log-probs and glibc's
   default malloc: the old log-probs taken from the update pass (``Trainer.old_from_update``),
   SDPA's math path for the passes with gradients (trainer.logprobs.attention_backend), then
   freed memory kept for reuse (``cpu_keep_freed_memory``, trainer.cpu_memory), and the
   float32 recomputation of the bfloat16 gap every ``bf16_gap_every`` steps instead of every
   step (the row times a step without it). The
   sampler's gain is printed on its own: one decode step's draw, ``torch.multinomial`` against
   ``trainer.rollout.draw_tokens``.
2. **Achievable FLOP/s**: the median rate of ``torch.matmul`` on the step's own shapes (the
   decode batch's rows for generation, a micro-batch's tokens for the training passes; the
   projections and the vocabulary head of the model), in float32 and, where the CPU has it
   natively, bfloat16.
3. **FLOPs of each phase**, counted by ``torch.utils.flop_counter.FlopCounterMode`` while the
   phase runs (matrix products and attention, forward and backward): generation, the old
   log-prob pass, forward + backward of the update, and the optimizer step (elementwise;
   counted as its memory traffic instead, since it does no matrix product).
4. **Time of each phase** (median of ``repeats``), achieved FLOP/s and the ratio of the time to
   the phase's bound (FLOPs / achievable FLOP/s), and the config's step beside the sum of the
   bounds of the phases it runs.
5. A ``torch.profiler`` table of one step's ``--profile`` most expensive operators (self CPU time).

Everything runs in the config's precision (``cpu_bf16: auto``: bfloat16 only where the CPU has it
natively) and with ``OMP_NUM_THREADS`` threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer import logprobs
from trainer.config import load_config
from trainer.cpu_memory import keep_freed_memory
from trainer.data import load_examples, prompt_text
from trainer.logprobs import completion_logprobs, logprobs_in_micro_batches
from trainer.loop import Trainer
from trainer.models import load_policy, load_tokenizer
from trainer.precision import compute_context, compute_dtype
from trainer.rewards import get_reward
from trainer.rollout import Sampling, TransformersEngine, draw_tokens

CONFIG = "trainer/configs/smollm2_cpu.yaml"


class SeparateOldPass(Trainer):
    """The step with its own gradient-free pass for the old log-probs: the baseline row."""

    old_from_update = False


def median_seconds(work, repeats: int) -> tuple[float, object]:
    """(median seconds, last result) of ``repeats`` calls of ``work``."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def counted_flops(work) -> tuple[int, object]:
    """(FLOPs torch counts in ``work``, its result)."""
    counter = FlopCounterMode(display=False)
    with counter:
        result = work()
    return counter.get_total_flops(), result


def matmul_rate(rows: int, config, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of the model's matrix products at ``rows`` rows: the q/o, k/v and MLP projections
    and the vocabulary head, weighted as one token's forward pass weights them."""
    d, ff, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * config.head_dim
    shapes = [(d, d, 2), (d, kv, 2), (d, ff, 2), (ff, d, 1), (d, config.vocab_size, 1 / config.num_hidden_layers)]
    seconds = flops = 0.0
    generator = torch.Generator().manual_seed(0)
    for inner, outer, count in shapes:
        x = torch.randn(rows, inner, generator=generator).to(dtype)
        w = torch.randn(inner, outer, generator=generator).to(dtype)
        torch.matmul(x, w)  # warm-up
        t, _ = median_seconds(lambda x=x, w=w: torch.matmul(x, w), repeats)
        seconds += count * t
        flops += count * 2.0 * rows * inner * outer
    return flops / seconds


def time_step(label: str, trainer: Trainer, repeats: int, baseline: float | None) -> float:
    """Print and return the median seconds of ``trainer``'s step after two warm-up steps (the
    first allocates AdamW's state, the second grows the heap to its steady size)."""
    trainer.train_step()
    trainer.train_step()
    seconds, metrics = median_seconds(lambda: trainer.train_step()[0], repeats)
    gain = "" if baseline is None else f"{baseline / seconds:5.2f}x"
    print(
        f"{label:<52} {seconds:8.2f} {metrics['time/generation']:10.2f} {metrics['time/logprobs']:9.2f} "
        f"{metrics['time/update']:7.2f} {gain:>6}"
    )
    return seconds


def sampler_gain(rows: int, vocab: int, decode_steps: int) -> None:
    """The next-token draw of one decode step: torch.multinomial (an exponential race over the
    vocabulary) against trainer.rollout.draw_tokens (one uniform per row), same logits."""
    logp = torch.log_softmax(3 * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)), -1)
    generator = torch.Generator().manual_seed(1)
    race, _ = median_seconds(lambda: torch.multinomial(logp.exp(), 1, generator=generator), 5)
    inverse, _ = median_seconds(lambda: draw_tokens(logp, generator), 5)
    print(
        f"\nsampling {rows} x {vocab}: torch.multinomial {race * 1e3:.1f} ms, draw_tokens {inverse * 1e3:.1f} ms "
        f"({race / inverse:.1f}x); {(race - inverse) * decode_steps:.2f} s less over {decode_steps} decode steps"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cpu")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", type=int, default=12, help="operators in the profile table (0: no profile)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    overrides = [
        f"prompts_per_step={args.prompts}",
        f"budget={args.prompts * args.rollouts}",
        f"max_new_tokens={args.new_tokens}",
        "progress=false",
        "tensorboard=false",
        "output_dir=/nonexistent",  # the step is not saved
    ]
    config = load_config(CONFIG, overrides + args.set)
    tokenizer = load_tokenizer(config.model)
    policy = load_policy(config.model, torch.device("cpu"), torch.float32, len(tokenizer))
    examples = load_examples(config.dataset, max_prompts=config.max_prompts, rng=np.random.default_rng(0))
    prompts = [prompt_text(e, config, tokenizer) for e in examples[: args.prompts]]
    dtype = compute_dtype(torch.device("cpu"), config.cpu_bf16)
    print(
        f"{config.model}, {args.prompts} prompts x {args.rollouts} rollouts, <= {args.new_tokens} new tokens, "
        f"micro-batches of {config.micro_batch_size}; {torch.get_num_threads()} threads; compute {dtype}"
    )

    every_step = dataclasses.replace(config, bf16_gap_every=1)  # the baseline measures the gap every step
    trainer = Trainer(every_step, policy, tokenizer, examples, get_reward(config.reward))
    separate = SeparateOldPass(every_step, policy, tokenizer, examples, get_reward(config.reward))
    print(f"\n{'Trainer.train_step':<52} {'seconds':>8} {'generation':>10} {'log-probs':>9} {'update':>7} {'gain':>6}")
    step_seconds = []

    def row(label, each):
        step_seconds.append(time_step(label, each, args.repeats, step_seconds[0] if step_seconds else None))

    math_limit, logprobs.MATH_ATTENTION_BYTES = logprobs.MATH_ATTENTION_BYTES, 0  # the baseline's flash kernel
    row("separate old pass, flash attention, default malloc", separate)
    row("old log-probs from the update", trainer)
    logprobs.MATH_ATTENTION_BYTES = math_limit
    row("+ math attention in the passes with gradients", trainer)
    if config.cpu_keep_freed_memory and keep_freed_memory():
        row("+ freed memory kept", trainer)
    if config.bf16_gap_every > 1 and trainer.measure_bf16_gap:
        trainer = Trainer(config, policy, tokenizer, examples, get_reward(config.reward))
        row(f"+ bf16 gap every {config.bf16_gap_every} steps (a step without it)", trainer)
    seconds = step_seconds[-1]
    print(f"{'gain over the baseline':<52} {step_seconds[0] / seconds:7.2f}x")

    engine = TransformersEngine(policy, tokenizer, batch_size=config.generation_batch_size)
    sampling = Sampling(config.temperature, args.new_tokens)
    context = lambda: compute_context(torch.device("cpu"), config.cpu_bf16)  # noqa: E731

    def generate():
        with context(), torch.no_grad():
            return engine.generate(prompts, [args.rollouts] * len(prompts), sampling, torch.Generator().manual_seed(0))

    policy.eval()
    batch = generate()
    tokens = int(batch.completion_mask.sum())
    micro = config.micro_batch_size

    def old_pass():
        with context(), torch.no_grad():
            return logprobs_in_micro_batches(policy, batch, config.temperature, micro, True)

    def forward_backward():
        for start in range(0, len(batch), micro):
            with context():
                logp = completion_logprobs(policy, batch, config.temperature, slice(start, start + micro), True)
            (logp.float().sum() / tokens).backward()

    optimizer = torch.optim.AdamW(policy.parameters(), lr=0.0)  # lr 0: the weights stay those sampled with

    def optimizer_step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    forward_backward()
    optimizer_step()  # allocates AdamW's state
    decode_rows = len(batch)
    train_rows = micro * (batch.sequences.shape[1])
    rates = {
        "generation": matmul_rate(decode_rows, policy.config, dtype),
        "training": matmul_rate(train_rows, policy.config, dtype),
    }
    print(
        f"\nachievable ({dtype}, torch.matmul on the step's shapes): "
        f"{rates['generation'] / 1e9:.0f} GFLOP/s at {decode_rows} rows (decode), "
        f"{rates['training'] / 1e9:.0f} GFLOP/s at {train_rows} rows (a training micro-batch)"
    )
    if dtype != torch.float32:
        fp32 = matmul_rate(train_rows, policy.config, torch.float32)
        print(f"  float32 at {train_rows} rows: {fp32 / 1e9:.0f} GFLOP/s")

    phases = {
        "generation": (generate, "generation"),
        "old log-probs": (old_pass, "training"),
        "forward + backward": (forward_backward, "training"),
    }
    print(f"\n{'phase':<20} {'seconds':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'bound s':>8} {'time/bound':>11}")
    bound_total = 0.0
    for name, (work, shape) in phases.items():
        flops, _ = counted_flops(work)
        spent, _ = median_seconds(work, args.repeats)
        bound = flops / rates[shape]
        skipped = name == "old log-probs" and trainer.old_from_update
        bound_total += 0.0 if skipped else bound
        rate = flops / spent / 1e9
        print(
            f"{name:<20} {spent:8.2f} {flops / 1e9:8.0f} {rate:8.0f} {bound:8.2f} {spent / bound:10.2f}x"
            + ("   (not run by this config's step: one optimizer step per batch, no KL)" if skipped else "")
        )
    params = sum(p.numel() for p in policy.parameters())
    spent, _ = median_seconds(optimizer_step, args.repeats)
    traffic = params * 4 * 7  # AdamW reads weight, grad, two moments and writes weight, two moments (float32)
    copy = torch.empty(params, dtype=torch.float32)
    copy_seconds, _ = median_seconds(lambda: copy.mul_(1.0), 5)  # one read + one write of the parameters
    bandwidth = 2 * params * 4 / copy_seconds
    bound = traffic / bandwidth
    bound_total += bound
    print(
        f"{'optimizer (AdamW)':<20} {spent:8.2f} {'-':>8} {'-':>8} {bound:8.2f} {spent / bound:10.2f}x"
        f"   (memory: {traffic / 1e9:.1f} GB at {bandwidth / 1e9:.0f} GB/s)"
    )
    print(
        f"this config's step {seconds:.2f} s against the sum of the bounds of the phases it runs, "
        f"{bound_total:.2f} s: {seconds / bound_total:.2f}x the bound"
    )
    sampler_gain(decode_rows, policy.config.vocab_size, sampling.max_new_tokens)
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            trainer.train_step()
        print(f"\none step's {args.profile} most expensive operators (self CPU time):")
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))


if __name__ == "__main__":
    main()
