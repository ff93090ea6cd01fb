"""GPU smoke test of the trainer: ``python scripts/gpu_smoke.py`` on a machine with a GPU.

A short run of a small randomly initialised Qwen2-architecture model (built locally: no
download) on the synthetic a+b= task, bf16 compute on the GPU, transformers rollouts (or vLLM's
with ``--engine vllm`` where the gpu extra is installed). It checks that
the loss is finite, the reward is logged, a checkpoint is written, and a run resumed from it
continues to the same last step; it prints the median step time, generated tokens/s and the
peak GPU memory. Exit status 1 when a check fails. ``--device cpu`` runs the same checks on a
CPU (the default test suite does, so the script cannot rot); CI never needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import load_checkpoint
from trainer.config import tiny_config
from trainer.data import arithmetic_task
from trainer.engines import ENGINES, build_engine
from trainer.loop import Trainer
from trainer.models import resolve_dtype, tiny_model, tiny_tokenizer
from trainer.rewards import get_reward


def _model(args, tok):
    device = torch.device(args.device)
    return tiny_model("qwen2", len(tok), 0, args.hidden, args.layers).to(
        device=device, dtype=resolve_dtype("auto", device)
    )


def _engine(args, tok, out: Path):
    """None (transformers sampling) or, with ``--engine vllm``, one colocated vLLM engine for
    the whole script (one ``LLM`` per process), on a copy of the smoke model saved to disk
    (vLLM loads models from a path)."""
    if args.engine != "vllm":
        return None
    path = out / "smoke_model"
    _model(args, tok).save_pretrained(path)
    tok.save_pretrained(path)
    config = tiny_config(model=str(path), rollout_engine="vllm", output_dir=str(out))
    return build_engine(config, None, tok, torch.device(args.device))


def _trainer(out: Path, args, steps: int, tok, engine) -> Trainer:
    config = tiny_config(
        prompts_per_step=args.prompts,
        budget=8 * args.prompts,
        min_rollouts=4,
        max_rollouts=16,
        allocation="vip",
        max_new_tokens=args.new_tokens,
        generation_batch_size=8 * args.prompts,
        learning_rate=1e-4,
        steps=steps,
        save_every=args.steps // 2,
        micro_batch_size=64,
        loss="ctpo",
        output_dir=str(out),
    )
    examples = arithmetic_task(256, np.random.default_rng(0), max_operand=9)
    return Trainer(config, _model(args, tok), tok, examples, get_reward("first_number"), engine=engine)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_smoke.py")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="transformers", help="vllm needs the gpu extra")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no GPU here: run with --device cpu for a CPU smoke run", file=sys.stderr)
        return 2
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tok = tiny_tokenizer()
        engine = _engine(args, tok, out)
        trainer = _trainer(out, args, args.steps, tok, engine)
        parameters = sum(p.numel() for p in trainer.policy.parameters())
        whole = trainer.train()
        steps = [m["time/total"] for m in whole[1:]]
        tokens = sum(m["response_length/mean"] * 8 * args.prompts for m in whole[1:])
        if not all(math.isfinite(m["loss"]) for m in whole):
            failures.append("a non-finite loss")
        if not all("reward/mean" in m for m in whole):
            failures.append("a step without reward")
        if not (out / "checkpoints" / f"step-{args.steps // 2}").exists():
            failures.append("no checkpoint at the half-way step")
        resumed = _trainer(out / "resumed", args, args.steps, tok, engine)
        resumed.output = out  # resume the run above from its half-way checkpoint
        resumed.load_state_dict(load_checkpoint(out / "checkpoints" / f"step-{args.steps // 2}"))
        tail = [resumed.train_step()[0] for _ in range(args.steps - args.steps // 2)]
        if tail[-1]["step"] != args.steps:
            failures.append("the resumed run did not reach the last step")
        gap = max(abs(a["reward/mean"] - b["reward/mean"]) for a, b in zip(tail, whole[args.steps // 2 :]))
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "engine": args.engine,
        "parameters_M": round(parameters / 1e6, 1),
        "step_s_median": round(statistics.median(steps), 4),
        "generated_tokens_per_s": round(tokens / sum(m["time/generation"] for m in whole[1:]), 1),
        "peak_gpu_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if args.device.startswith("cuda")
        else None,
        "reward_first_last": [whole[0]["reward/mean"], whole[-1]["reward/mean"]],
        "resume_max_reward_gap": gap,
        "failures": failures,
    }
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
