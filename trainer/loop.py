"""The training loop: allocate -> generate -> reward -> advantages -> PPO epochs -> log -> save.

One step (``Trainer.train_step``):
1. draw ``prompts_per_step`` prompts (a seeded permutation per pass over the data);
2. counts n_q from trainer.allocation (uniform, VIP, or a baseline), sum n_q = budget;
3. sample sum n_q completions with the rollout engine;
4. rewards (checked: one finite number per completion), advantages per group;
5. old log-probs (recomputed by the policy unless ``recompute_old_logprobs`` is off), the
   reference's log-probs and tau (none, fixed, or Corollary 3's tau* from |l| of the batch,
   theory.bounds.optimal_tau with n = prompts and K = floor(C / n)) when kl_coef > 0;
6. ``ppo_epochs`` passes over the rollouts, each split into ``mini_batches`` optimizer steps
   of micro-batches (gradient accumulation), AdamW, gradient clipping; the learning rate
   warms up linearly over ``warmup_steps`` rollout steps (VIP Table 9 counts in rollout steps);
7. the predictor learns the step's rewards; metrics and rollout-log rows are appended; a
   checkpoint every ``save_every`` steps.

Randomness: a numpy Generator (prompt order, GP bandwidth) and a torch Generator (sampling,
mini-batch order), both seeded by ``seed`` and saved in checkpoints.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from theory.bounds import optimal_tau
from trainer.advantages import rollout_advantages, zero_variance_fraction
from trainer.allocation import RolloutAllocator
from trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import CLIP_DEFAULTS, TrainConfig, save_config
from trainer.data import format_prompt
from trainer.logs import JsonlLog, TensorBoard
from trainer.losses import ClipSpec, aggregation_weights, clip_fractions, kl_penalty, policy_loss, sequence_log_ratio
from trainer.rewards import checked_rewards, scaled
from trainer.rollout import Sampling, TransformersEngine, completion_logprobs


class PromptSampler:
    """Prompts in a fresh seeded permutation per pass; the tail of a pass that cannot fill a
    step is skipped."""

    def __init__(self, n_examples: int, batch: int, rng: np.random.Generator):
        if batch > n_examples:
            raise ValueError(f"prompts_per_step must be <= the number of prompts ({n_examples}); got {batch}")
        self.n, self.batch, self.rng = n_examples, batch, rng
        self.order, self.position = rng.permutation(n_examples), 0

    def next(self) -> np.ndarray:
        if self.position + self.batch > self.n:
            self.order, self.position = self.rng.permutation(self.n), 0
        out = self.order[self.position : self.position + self.batch]
        self.position += self.batch
        return out

    def state_dict(self) -> dict:
        return {"order": self.order.copy(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = np.asarray(state["order"]), int(state["position"])


class _Timer:
    def __init__(self):
        self.seconds = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Trainer:
    def __init__(self, config: TrainConfig, policy, tokenizer, examples, reward_fn, reference=None, engine=None):
        if config.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        self.cfg, self.policy, self.tokenizer, self.reference, self.reward_fn = config, policy, tokenizer, reference, reward_fn
        self.examples = list(examples)
        self.prompts = [format_prompt(e.question, config.template, tokenizer, config.chat_template) for e in self.examples]
        self.device = next(policy.parameters()).device
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.sampler = PromptSampler(len(self.examples), config.prompts_per_step, self.rng)
        self.allocator = RolloutAllocator(
            config.allocation, [e.question for e in self.examples], config.rollout_budget, config.min_rollouts, config.max_rollouts,
            config.advantage, config.allocation_method, config.embedding, self.rng,
        )
        self.engine = engine or TransformersEngine(policy, tokenizer, config.generation_batch_size)
        self.sampling = Sampling(config.temperature, config.max_new_tokens)
        self.clip = ClipSpec(*config.clip_range, config.ctpo_power)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.step = 0
        self.output = Path(config.output_dir)

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "allocator": self.allocator.state_dict(),
            "sampler": self.sampler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.allocator.load_state_dict(state["allocator"])
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.generator.set_state(state["torch_generator"])
        self.step = int(state["step"])

    def resume(self) -> bool:
        """Load the newest checkpoint of ``output_dir``; False when there is none."""
        path = latest_checkpoint(self.output)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path))
        return True

    # --- the loop ---------------------------------------------------------------------------

    def train(self, resumed: bool = False) -> list[dict]:
        """Run steps until ``steps``; returns this call's metrics."""
        save_config(self.cfg, self.output / "config.yaml")
        start = self.step if resumed else None
        metrics_log = JsonlLog(self.output / "metrics.jsonl", start)
        rollout_log = JsonlLog(self.output / "rollouts.jsonl", start)
        board = TensorBoard(self.output / "tensorboard", self.cfg.tensorboard)
        history = []
        with tqdm(total=self.cfg.steps, initial=self.step, disable=not self.cfg.progress, desc="steps") as bar:
            while self.step < self.cfg.steps:
                metrics, rows = self.train_step()
                metrics_log.write([metrics])
                rollout_log.write(rows)
                board.write(metrics)
                history.append(metrics)
                if self.step % self.cfg.save_every == 0 or self.step == self.cfg.steps:
                    save_checkpoint(self.output, self.step, self.state_dict(), self.cfg.keep_checkpoints)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}")
        return history

    def train_step(self) -> tuple[dict, list[dict]]:
        cfg, timer = self.cfg, _Timer()
        with timer("total"):
            indices = self.sampler.next()
            counts, p_hat = self.allocator.allocate(indices)
            self.policy.eval()
            with timer("generation"):
                batch = self.engine.generate([self.prompts[i] for i in indices], counts, self.sampling, self.generator)
            with timer("reward"):
                rewards = self._rewards(indices, batch)
            advantages = rollout_advantages(rewards, batch.prompt_index, cfg.advantage)
            with timer("logprobs"):
                old, ref = self._old_and_reference_logprobs(batch)
            tau, kl_stats = self._kl_tau(old, ref, batch)
            z_norms = self._z_norms(batch) if cfg.log_z_norm else None
            with timer("update"):
                self.policy.train()
                update = self._update(batch, old, ref, torch.as_tensor(advantages, device=self.device, dtype=torch.float32), tau)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            groups = [rewards[np.asarray(batch.prompt_index) == q] for q in range(len(indices))]
            self.allocator.observe(indices, groups)
        self.step += 1
        metrics = self._metrics(batch, rewards, counts, old, timer.seconds, update | kl_stats | {"lr": lr}, tau)
        return metrics, self._rollout_rows(indices, batch, rewards, counts, p_hat, z_norms)

    # --- pieces of a step -------------------------------------------------------------------

    def _rewards(self, indices, batch) -> np.ndarray:
        prompts = [self.prompts[indices[q]] for q in batch.prompt_index]
        answers = [self.examples[indices[q]].answer for q in batch.prompt_index]
        values = checked_rewards(self.reward_fn, prompts, batch.completions, answers)
        return np.asarray(scaled(values, self.cfg.reward_convention))

    def _logprobs(self, model, batch) -> torch.Tensor:
        """Completion log-probs of every rollout by ``model``, in micro-batches, no gradient."""
        size = self.cfg.micro_batch_size
        with torch.no_grad():
            parts = [completion_logprobs(model, batch, self.cfg.temperature, slice(i, i + size)) for i in range(0, len(batch), size)]
        return torch.cat(parts).float()

    def _old_and_reference_logprobs(self, batch):
        old = self._logprobs(self.policy, batch) if self.cfg.recompute_old_logprobs else batch.old_logprobs.float()
        ref = self._logprobs(self.reference, batch) if self.cfg.kl_coef > 0 else None
        return old, ref

    def _kl_tau(self, old, ref, batch):
        """tau for the KL clip and the KL of the rollout policy to the reference."""
        if ref is None:
            return None, {}
        l = sequence_log_ratio(old, ref, batch.completion_mask)
        if self.cfg.kl_clip == "none":
            tau = None
        elif self.cfg.kl_clip == "fixed":
            tau = self.cfg.kl_tau
        else:
            n = self.cfg.prompts_per_step
            tau = optimal_tau(l.abs().cpu().numpy(), n, self.cfg.rollout_budget // n, self.cfg.kl_delta)
        stats = {"kl/k3": float(kl_penalty(l, "k3", None).mean()), "kl/log_ratio_abs_mean": float(l.abs().mean())}
        stats["kl/clip_fraction"] = 0.0 if tau is None else float((l.abs() > tau).float().mean())
        return tau, stats

    def _z_norms(self, batch) -> list[float]:
        """||H(o)||_2 per rollout: the norm of the gradient of the token-averaged log-likelihood
        (VIP §4). One backward pass per rollout."""
        norms = []
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for r in range(len(batch)):
            logp = completion_logprobs(self.policy, batch, self.cfg.temperature, slice(r, r + 1))
            mean = logp.sum() / batch.completion_mask[r].sum()
            grads = torch.autograd.grad(mean, params, allow_unused=True)
            norms.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
        return norms

    def _update(self, batch, old, ref, advantages, tau) -> dict:
        cfg, mask = self.cfg, batch.completion_mask
        clips = {name: ClipSpec(*CLIP_DEFAULTS[name], cfg.ctpo_power) for name in CLIP_DEFAULTS} | {cfg.loss: self.clip}
        totals = {"loss": 0.0, "grad_norm": 0.0, "tokens": 0.0} | {f"clip/{k}": 0.0 for k in clips}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(batch), generator=self.generator, device=self.device)
            for rows in torch.tensor_split(order, cfg.mini_batches):
                weights = aggregation_weights(mask[rows], cfg.aggregation, cfg.max_new_tokens)
                self.optimizer.zero_grad(set_to_none=True)
                for start in range(0, len(rows), cfg.micro_batch_size):
                    micro = slice(start, start + cfg.micro_batch_size)
                    loss, fractions = self._micro_loss(batch, rows[micro], old, ref, advantages, weights[micro], tau, len(rows), clips)
                    loss.backward()
                    tokens = float(mask[rows[micro]].sum())
                    totals["loss"] += float(loss.detach())
                    totals["tokens"] += tokens
                    for k, v in fractions.items():
                        totals[f"clip/{k}"] += v * tokens
                totals["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
                self.optimizer.step()
                updates += 1
        out = {k: v / totals["tokens"] for k, v in totals.items() if k.startswith("clip/")}
        return out | {"loss": totals["loss"] / updates, "grad_norm": totals["grad_norm"] / updates}

    def _micro_loss(self, batch, rows, old, ref, advantages, weights, tau, sequences, clips):
        cfg, mask = self.cfg, batch.completion_mask[rows]
        logp = completion_logprobs(self.policy, batch, cfg.temperature, rows).float()
        loss = policy_loss(cfg.loss, logp, old[rows], mask, advantages[rows], weights, self.clip, sequences)
        if ref is not None:
            loss = loss + cfg.kl_coef * kl_penalty(sequence_log_ratio(logp, ref[rows], mask), cfg.kl_estimator, tau).sum() / sequences
        return loss, clip_fractions(logp.detach(), old[rows], mask, clips)

    # --- records ----------------------------------------------------------------------------

    def _metrics(self, batch, rewards, counts, old, seconds, update, tau) -> dict:
        """The step's metrics row; ``update`` holds the loss, clip, KL and learning-rate figures."""
        mask = batch.completion_mask
        lengths = mask.sum(1).float()
        hist = np.bincount(counts)
        metrics = {
            "step": self.step,
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std()),
            "zero_variance_groups": zero_variance_fraction(rewards, batch.prompt_index),
            "allocation/histogram": {str(n): int(c) for n, c in enumerate(hist) if c},
            "allocation/min": int(counts.min()),
            "allocation/max": int(counts.max()),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": int(lengths.max()),
            "entropy": float(-old[mask].mean()),  # -mean log pi of the sampled tokens: unbiased for the per-token entropy
            "logprob_mismatch": float((old - batch.old_logprobs.float())[mask].abs().max()),
        }
        metrics |= update
        metrics |= {f"time/{k}": v for k, v in seconds.items()}
        metrics["time/allocation"] = self.allocator.seconds
        metrics["time/allocation_fraction"] = self.allocator.seconds / seconds["total"]
        if tau is not None:
            metrics["kl/tau"] = float(tau)
        return metrics

    def _rollout_rows(self, indices, batch, rewards, counts, p_hat, z_norms) -> list[dict]:
        lengths = batch.completion_mask.sum(1).tolist()
        rows, seen = [], {}
        for r, q in enumerate(batch.prompt_index):
            j = seen[q] = seen.get(q, -1) + 1
            row = {
                "step": self.step,
                "prompt_id": int(self.examples[indices[q]].prompt_id),
                "rollout": j,
                "reward": float(rewards[r]),
                "response_length": int(lengths[r]),
                "n_allocated": int(counts[q]),
                "p_hat": None if p_hat is None else float(p_hat[q]),
            }
            if z_norms is not None:
                row["z_norm"] = z_norms[r]
            rows.append(row)
        return rows
