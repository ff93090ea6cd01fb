"""A training step of our trainer against TRL's GRPOTrainer on the same tiny model and task.

    pip install trl            # here only: TRL is not a dependency of rlvr-lab
    python -m benchmarks.trainer_vs_trl [--steps 30] [--max-new-tokens 2 32] [--device cuda]

Both train the tiny Qwen2-architecture model (trainer.models.tiny_model, same weights) on the
synthetic a+b= task with 8 prompts x 8 generations per step, temperature 1, beta = 0, one
optimizer step per generation batch, on the CPU (float32) or a GPU (``--device cuda``, bf16).
Ours takes the sampling log-probs as the old policy's (``recompute_old_logprobs=False``), as TRL
does when it makes one update per batch. Reported: the median wall time of a step after 3
warm-up steps, for each max-new-tokens, and the ratio ours / TRL (<= 1 is the target).
A second table times VIP's prediction + allocation + predictor update inside our step and
gives its share of the step time (target <= 1 %).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from trainer.config import TrainConfig, tiny_config
from trainer.data import arithmetic_task
from trainer.loop import Trainer
from trainer.models import resolve_dtype, tiny_model, tiny_tokenizer
from trainer.rewards import get_reward

PROMPTS, GENERATIONS, WARMUP = 8, 8, 3


def _config(max_new_tokens: int, steps: int, allocation: str, output_dir: str) -> TrainConfig:
    return tiny_config(
        prompts_per_step=PROMPTS,
        budget=PROMPTS * GENERATIONS,
        min_rollouts=4,
        max_rollouts=16,
        allocation=allocation,
        max_new_tokens=max_new_tokens,
        learning_rate=1e-3,
        steps=steps,
        micro_batch_size=PROMPTS * GENERATIONS,
        generation_batch_size=PROMPTS * GENERATIONS,
        advantage="grpo",
        loss="grpo",
        aggregation="token_mean",
        recompute_old_logprobs=False,
        output_dir=output_dir,
        save_every=10_000,
    )


def _model(vocab: int, device: str):
    device = torch.device(device)
    return tiny_model("qwen2", vocab).to(device=device, dtype=resolve_dtype("auto", device))


def ours(
    max_new_tokens: int, steps: int, allocation: str, output_dir: str, device: str = "cpu"
) -> tuple[list[float], list[float]]:
    """Per-step seconds of our trainer, and the seconds of VIP's predictor + allocator in each."""
    tok = tiny_tokenizer()
    examples = arithmetic_task(64, np.random.default_rng(0))
    trainer = Trainer(
        _config(max_new_tokens, steps, allocation, output_dir),
        _model(len(tok), device),
        tok,
        examples,
        get_reward("first_number"),
    )
    step_s, alloc_s = [], []
    for _ in range(steps):
        metrics, _ = trainer.train_step()
        step_s.append(metrics["time/total"])
        alloc_s.append(metrics["time/allocation"])
    return step_s[WARMUP:], alloc_s[WARMUP:]


def trl(max_new_tokens: int, steps: int, output_dir: str, device: str = "cpu") -> list[float]:
    """Per-step seconds of TRL's GRPOTrainer (a callback times each optimizer step)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = tiny_tokenizer()
    examples = arithmetic_task(64, np.random.default_rng(0))
    data = Dataset.from_dict({"prompt": [e.question for e in examples], "answer": [e.answer for e in examples]})
    reward = get_reward("first_number")

    def trl_reward(prompts, completions, answer, **_):
        return reward(prompts, completions, answer)

    times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    config = GRPOConfig(
        output_dir=output_dir,
        use_cpu=device == "cpu",
        bf16=device != "cpu",
        num_generations=GENERATIONS,
        per_device_train_batch_size=PROMPTS * GENERATIONS,
        steps_per_generation=1,
        num_iterations=1,
        max_completion_length=max_new_tokens,
        temperature=1.0,
        beta=0.0,
        learning_rate=1e-3,
        max_steps=steps,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        loss_type="dapo",
        seed=0,
        dataloader_num_workers=0,
    )
    GRPOTrainer(
        model=_model(len(tok), device),
        reward_funcs=trl_reward,
        args=config,
        train_dataset=data,
        processing_class=tok,
        callbacks=[StepTimer()],
    ).train()
    return times[WARMUP:]


def main(argv=None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.trainer_vs_trl")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[2, 32])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU mode")
    args = parser.parse_args(argv)
    print(f"{'new tokens':>10} {'ours (s/step)':>14} {'TRL (s/step)':>13} {'ours / TRL':>11}")
    for tokens in args.max_new_tokens:
        with tempfile.TemporaryDirectory() as tmp:
            mine = statistics.median(ours(tokens, args.steps, "uniform", f"{tmp}/ours", args.device)[0])
            theirs = statistics.median(trl(tokens, args.steps, f"{tmp}/trl", args.device))
        print(f"{tokens:>10} {mine:>14.4f} {theirs:>13.4f} {mine / theirs:>11.2f}")
    print(f"\n{'new tokens':>10} {'VIP step (s)':>13} {'predict+allocate+update (s)':>28} {'share':>7}")
    for tokens in args.max_new_tokens:
        with tempfile.TemporaryDirectory() as tmp:
            step_s, alloc_s = ours(tokens, args.steps, "vip", f"{tmp}/vip", args.device)
        share = statistics.median(np.array(alloc_s) / np.array(step_s))
        print(f"{tokens:>10} {statistics.median(step_s):>13.4f} {statistics.median(alloc_s):>28.5f} {share:>7.2%}")


if __name__ == "__main__":
    main()
