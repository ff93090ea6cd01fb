"""The training loop: allocate -> generate -> reward -> advantages -> PPO epochs -> log -> save.

One step (``Trainer.train_step``):
1. draw ``prompts_per_step`` prompts (a seeded permutation per pass over the data);
2. counts n_q from trainer.allocation (uniform, VIP, or a baseline), sum n_q = budget;
3. sync the engine's weights with the policy (a no-op for transformers sampling) and sample
   sum n_q completions with it;
4. rewards (checked: one finite number per completion), advantages per group;
5. old log-probs (recomputed by the policy unless ``recompute_old_logprobs`` is off), the
   reference's log-probs and tau (none, fixed, or Corollary 3's tau* from |l| of the batch,
   theory.bounds.optimal_tau with n = prompts and K = floor(C / n)) when kl_coef > 0;
6. ``ppo_epochs`` passes over the rollouts, each split into ``mini_batches`` optimizer steps
   of micro-batches (gradient accumulation), AdamW, gradient clipping; the learning rate
   warms up linearly over ``warmup_steps`` rollout steps (VIP Table 9 counts in rollout steps);
7. the predictor learns the step's rewards; metrics and rollout-log rows are appended; a
   checkpoint every ``save_every`` steps.

A non-finite loss or gradient norm stops the run before the optimizer step with a
:class:`DivergenceError` naming the step and the quantity (nothing of that step is logged or
saved). Rank 0 writes the logs and checkpoints; a write that fails there (trainer.disk.WriteError)
stops every rank, as do a divergence and a resume without a usable checkpoint.

Randomness: a numpy Generator (prompt order, GP bandwidth; rank 0) and a torch Generator per
rank (sampling, mini-batch order) seeded by ``seed`` + rank, all saved in checkpoints. How
the work is split over several ranks: the :class:`Trainer` docstring.
"""

from __future__ import annotations

import contextlib
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm.auto import tqdm

from theory.bounds import optimal_tau

from trainer import distributed
from trainer.advantages import rollout_advantages, zero_variance_fraction
from trainer.allocation import RolloutAllocator
from trainer.checkpoint import load_checkpoint, load_newest_checkpoint, save_checkpoint
from trainer.config import CLIP_DEFAULTS, TrainConfig
from trainer.data import format_prompt
from trainer.distributed import World
from trainer.logs import RunLogs
from trainer.losses import ClipSpec, aggregation_weights, clip_fractions, kl_penalty, policy_loss, sequence_log_ratio
from trainer.rewards import checked_rewards, scaled
from trainer.rollout import Sampling, TransformersEngine, completion_logprobs
from trainer.run_folder import record_config


class DivergenceError(ArithmeticError):
    """A non-finite loss or gradient norm; the message names the step and the quantity."""


class StoppedByRankZero(RuntimeError):
    """Raised on the other ranks when rank 0's part of the work (a write, a resume) failed."""


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
    """One training run on ``world`` (a single process by default; see trainer.distributed).

    With N ranks, rank 0 draws the prompts, allocates and broadcasts the counts; the step's
    rollouts (prompt-sorted) are split into N equal contiguous slices, one per rank; rewards
    are gathered so that every rank computes the group advantages; the loss weights use the
    mini-batch's global token and sequence totals and are scaled by N because FSDP averages
    gradients over ranks. Rank 0 logs and writes checkpoints.
    """

    def __init__(self, config: TrainConfig, policy, tokenizer, examples, reward_fn, reference=None, engine=None, world: World = World()):
        if config.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        if config.rollout_budget % world.size:
            raise ValueError(f"budget C = {config.rollout_budget} must be a multiple of the number of processes ({world.size}): each rank gets C / N rollouts")
        if config.log_z_norm and world.size > 1:
            raise ValueError("log_z_norm needs a single process: FSDP averages each backward pass over ranks")
        self.cfg, self.policy, self.tokenizer, self.reference, self.reward_fn, self.world = config, policy, tokenizer, reference, reward_fn, world
        self.examples = list(examples)
        self.prompts = [format_prompt(e.question, config.template, tokenizer, config.chat_template) for e in self.examples]
        self.device = world.device if world.size > 1 else next(policy.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + world.rank)
        self.rng = self.sampler = self.allocator = None
        if world.main:  # the prompt order and the predictor live on rank 0
            self.rng = np.random.default_rng(config.seed)
            self.sampler = PromptSampler(len(self.examples), config.prompts_per_step, self.rng)
            self.allocator = RolloutAllocator(
                config.allocation, [e.question for e in self.examples], config.rollout_budget, config.min_rollouts, config.max_rollouts,
                config.advantage, config.allocation_method, config.embedding, self.rng, config.predictor,
            )
        all_done = lambda flag: distributed.all_true(flag, world, self.device)  # noqa: E731
        self.engine = engine or TransformersEngine(policy, tokenizer, config.generation_batch_size, all_done)
        self.engine.check_prompt_lengths(self.prompts, config.max_new_tokens)
        self.sampling = Sampling(config.temperature, config.max_new_tokens)
        self.clip = ClipSpec(*config.clip_range, config.ctpo_power)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.step = 0
        self.output = Path(config.output_dir)

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict | None:
        """The run's state, gathered to rank 0 (None on the other ranks). Collective."""
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model = get_model_state_dict(self.policy, options=full)
        optimizer = get_optimizer_state_dict(self.policy, self.optimizer, options=full)
        generators = distributed.gather(self.generator.get_state().cpu(), self.world)
        if not self.world.main:
            return None
        return {
            "step": self.step,
            "model": model,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "allocator": self.allocator.state_dict(),
            "sampler": self.sampler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_generators": generators,
        }

    def load_state_dict(self, state: dict) -> None:
        """Every rank loads the whole checkpoint and keeps its part."""
        if len(state["torch_generators"]) != self.world.size:
            raise ValueError(f"the checkpoint was written by {len(state['torch_generators'])} processes; this run has {self.world.size}")
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.policy, state["model"], options=full)
        set_optimizer_state_dict(self.policy, self.optimizer, state["optimizer"], options=full)
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["torch_generators"][self.world.rank])
        if self.world.main:
            self.allocator.load_state_dict(state["allocator"])
            self.sampler.load_state_dict(state["sampler"])
            self.rng.bit_generator.state = state["numpy_rng"]
        self.step = int(state["step"])

    def resume(self) -> bool:
        """Load the newest usable checkpoint of ``output_dir`` (rank 0 checks the digests and falls
        back as trainer.checkpoint.load_newest_checkpoint says, then tells the other ranks which
        one to load); False when there is none."""
        found = self._on_main(lambda: load_newest_checkpoint(self.output))
        path = distributed.broadcast(found and found[0], self.world)
        if path is None:
            return False
        self.load_state_dict(found[1] if self.world.main else load_checkpoint(path, verify=False))
        return True

    def _save(self) -> None:
        state = self.state_dict()
        self._on_main(lambda: save_checkpoint(self.output, self.step, state, self.cfg.keep_checkpoints))

    def _on_main(self, work):
        """``work()`` on rank 0 (its result there; None elsewhere). When it raises, every rank
        raises: the others would otherwise wait for rank 0 in the next collective."""
        failure = result = None
        if self.world.main:
            try:
                result = work()
            except Exception as exc:
                failure = exc
        message = distributed.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}", self.world)
        if failure is not None:
            raise failure
        if message is not None:
            raise StoppedByRankZero(f"rank 0 stopped the run: {message}")
        return result

    # --- the loop ---------------------------------------------------------------------------

    def train(self, resumed: bool = False) -> list[dict]:
        """Run steps until ``steps``; returns this call's metrics (on rank 0; [] elsewhere)."""
        main = self.world.main
        logs = self._on_main(lambda: self._open_logs(resumed))
        history = []
        progress = tqdm(total=self.cfg.steps, initial=self.step, disable=not (self.cfg.progress and main), desc="steps")
        try:
            with progress as bar:
                while self.step < self.cfg.steps:
                    metrics, rows = self.train_step()
                    self._on_main(lambda: logs.write(metrics, rows))
                    if main:
                        history.append(metrics)
                        bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}")
                    if self.step % self.cfg.save_every == 0 or self.step == self.cfg.steps:
                        self._save()
                    bar.update(1)
        finally:
            if main:
                logs.close()
        return history

    def _open_logs(self, resumed: bool) -> RunLogs:
        """config.yaml (and the record of a resume's config changes), then the logs: appended
        after the checkpoint's step when ``resumed``, started afresh otherwise."""
        record_config(self.cfg, self.output, self.step)
        return RunLogs(self.output, self.step if resumed else None, self.cfg.tensorboard)

    def _plan(self):
        """(prompt indices, counts, p_hat) of the step: drawn and allocated on rank 0, broadcast."""
        plan = None
        if self.world.main:
            indices = self.sampler.next()
            plan = (indices, *self.allocator.allocate(indices))
        return distributed.broadcast(plan, self.world)

    def _my_counts(self, prompt_index: np.ndarray, n_prompts: int) -> tuple[np.ndarray, slice]:
        """This rank's per-prompt counts and its slice of the step's prompt-sorted rollouts
        (``prompt_index[r]`` is rollout r's prompt)."""
        per = prompt_index.size // self.world.size
        mine = slice(self.world.rank * per, (self.world.rank + 1) * per)
        return np.bincount(prompt_index[mine], minlength=n_prompts), mine

    def train_step(self) -> tuple[dict | None, list[dict] | None]:
        """One step (see the module docstring); metrics and rollout-log rows on rank 0."""
        cfg, timer = self.cfg, _Timer()
        with timer("total"):
            indices, counts, p_hat = self._plan()
            prompt_index = np.repeat(np.arange(len(counts)), counts)
            local_counts, mine = self._my_counts(prompt_index, len(counts))
            self.policy.eval()
            with timer("weight_sync"):
                self.engine.sync_weights(self.policy)
            with timer("generation"), self._compute():
                batch = self.engine.generate([self.prompts[i] for i in indices], local_counts, self.sampling, self.generator)
            with timer("reward"):
                local_rewards = self._rewards(indices, batch)
            rewards = np.concatenate(distributed.gather(local_rewards, self.world))
            advantages = rollout_advantages(rewards, prompt_index, cfg.advantage)[mine]
            with timer("logprobs"), self._compute():
                old, ref = self._old_and_reference_logprobs(batch)
            tau, kl_stats = self._kl_tau(old, ref, batch)
            z_norms = self._z_norms(batch) if cfg.log_z_norm else None
            with timer("update"), self._compute():
                self.policy.train()
                update = self._update(batch, old, ref, torch.as_tensor(advantages, device=self.device, dtype=torch.float32), tau)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            if self.world.main:  # the prompts that got rollouts (VIP's released rule may drop some)
                kept = np.flatnonzero(counts > 0)
                groups = np.split(rewards, np.cumsum(counts)[:-1])  # rollouts are sorted by prompt
                self.allocator.observe(indices[kept], [groups[q] for q in kept])
        self.step += 1
        lengths = np.concatenate(distributed.gather(batch.completion_mask.sum(1).cpu().numpy(), self.world))
        token_stats = self._token_stats(batch, old)
        if not self.world.main:
            return None, None
        metrics = self._metrics(rewards, prompt_index, counts, lengths, token_stats, timer.seconds, update | kl_stats | {"lr": lr}, tau)
        return metrics, self._rollout_rows(indices, prompt_index, rewards, lengths, counts, p_hat, z_norms)

    # --- pieces of a step -------------------------------------------------------------------

    def _compute(self):
        """bfloat16 compute on a GPU for float32 weights (trainer.models.resolve_dtype)."""
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _rewards(self, indices, batch) -> np.ndarray:
        prompts = [self.prompts[indices[q]] for q in batch.prompt_index]
        answers = [self.examples[indices[q]].answer for q in batch.prompt_index]
        rows = [self.examples[indices[q]].prompt_id for q in batch.prompt_index]
        checks = {"timeout_s": self.cfg.reward_timeout_s, "rows": rows, "binary": self.cfg.binary_rewards}
        values = checked_rewards(self.reward_fn, prompts, batch.completions, answers, **checks)
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
        """tau for the KL clip and the KL of the rollout policy to the reference (whole step)."""
        if ref is None:
            return None, {}
        l = sequence_log_ratio(old, ref, batch.completion_mask)
        everyone = torch.as_tensor(np.concatenate(distributed.gather(l.cpu().numpy(), self.world)))
        if self.cfg.kl_clip == "none":
            tau = None
        elif self.cfg.kl_clip == "fixed":
            tau = self.cfg.kl_tau
        else:
            n = self.cfg.prompts_per_step
            tau = optimal_tau(everyone.abs().numpy(), n, self.cfg.rollout_budget // n, self.cfg.kl_delta)
        stats = {"kl/k3": float(kl_penalty(everyone, "k3", None).mean()), "kl/log_ratio_abs_mean": float(everyone.abs().mean())}
        stats["kl/clip_fraction"] = 0.0 if tau is None else float((everyone.abs() > tau).float().mean())
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

    def _total(self, value) -> float:
        return distributed.total(float(value), self.world, self.device)

    def _update(self, batch, old, ref, advantages, tau) -> dict:
        cfg, mask = self.cfg, batch.completion_mask
        clips = {name: ClipSpec(*CLIP_DEFAULTS[name], cfg.ctpo_power) for name in CLIP_DEFAULTS} | {cfg.loss: self.clip}
        totals = {"loss": 0.0, "grad_norm": 0.0, "tokens": 0.0} | {f"clip/{k}": 0.0 for k in clips}
        updates = 0
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(batch), generator=self.generator, device=self.device)
            for mini_batch, rows in enumerate(torch.tensor_split(order, cfg.mini_batches)):
                tokens, sequences = self._total(mask[rows].sum()), int(self._total(len(rows)))
                weights = aggregation_weights(mask[rows], cfg.aggregation, cfg.max_new_tokens, tokens=tokens, sequences=sequences)
                self.optimizer.zero_grad(set_to_none=True)
                mini_loss = 0.0
                for start in range(0, len(rows), cfg.micro_batch_size):
                    micro = slice(start, start + cfg.micro_batch_size)
                    loss, fractions = self._micro_loss(batch, rows[micro], old, ref, advantages, weights[micro], tau, sequences, clips)
                    (loss * self.world.size).backward()  # FSDP averages gradients over ranks; the loss is their sum
                    micro_tokens = float(mask[rows[micro]].sum())
                    mini_loss += float(loss.detach())
                    totals["tokens"] += micro_tokens
                    for k, v in fractions.items():
                        totals[f"clip/{k}"] += v * micro_tokens
                grad_norm = _as_float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
                where = f"PPO epoch {epoch + 1} of {cfg.ppo_epochs}, mini-batch {mini_batch + 1} of {cfg.mini_batches}"
                self._check_finite(where, loss=self._total(mini_loss), gradient_norm=grad_norm)
                totals["loss"] += mini_loss
                totals["grad_norm"] += grad_norm
                self.optimizer.step()
                updates += 1
        summed = {k: self._total(v) for k, v in totals.items() if k != "grad_norm"}
        out = {k: v / summed["tokens"] for k, v in summed.items() if k.startswith("clip/")}
        return out | {"loss": summed["loss"] / updates, "grad_norm": totals["grad_norm"] / updates}

    def _check_finite(self, where: str, **quantities: float) -> None:
        """A DivergenceError when a quantity (summed over ranks, so every rank agrees) is not
        finite; called before the optimizer step, so the weights are those of the step before."""
        for name, value in quantities.items():
            if not math.isfinite(value):
                raise DivergenceError(
                    f"training diverged at step {self.step + 1}: the {name.replace('_', ' ')} is {value} ({where});"
                    " stopped before the optimizer step, nothing of this step was logged or saved"
                )

    def _micro_loss(self, batch, rows, old, ref, advantages, weights, tau, sequences, clips):
        cfg, mask = self.cfg, batch.completion_mask[rows]
        logp = completion_logprobs(self.policy, batch, cfg.temperature, rows).float()
        loss = policy_loss(cfg.loss, logp, old[rows], mask, advantages[rows], weights, self.clip, sequences)
        if ref is not None:
            loss = loss + cfg.kl_coef * kl_penalty(sequence_log_ratio(logp, ref[rows], mask), cfg.kl_estimator, tau).sum() / sequences
        return loss, clip_fractions(logp.detach(), old[rows], mask, clips)

    def _token_stats(self, batch, old) -> dict:
        """Entropy estimate and sampler/trainer log-prob gap over every rank's tokens."""
        mask = batch.completion_mask
        gap = float((old - batch.old_logprobs.float())[mask].abs().max())
        return {
            "entropy": self._total(-old[mask].sum()) / self._total(mask.sum()),  # -mean log pi of the sampled tokens: unbiased for the per-token entropy
            "logprob_mismatch": max(distributed.gather(gap, self.world)),
        }

    # --- records ----------------------------------------------------------------------------

    def _metrics(self, rewards, prompt_index, counts, lengths, token_stats, seconds, update, tau) -> dict:
        """The step's metrics row; ``update`` holds the loss, clip, KL and learning-rate figures."""
        hist = np.bincount(counts)
        metrics = {
            "step": self.step,
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std()),
            "zero_variance_groups": zero_variance_fraction(rewards, prompt_index),
            "allocation/histogram": {str(n): int(c) for n, c in enumerate(hist) if c},
            "allocation/min": int(counts.min()),
            "allocation/max": int(counts.max()),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": int(lengths.max()),
        }
        metrics |= token_stats | update
        metrics |= {f"time/{k}": v for k, v in seconds.items()}
        metrics["time/allocation"] = self.allocator.seconds
        metrics["time/allocation_fraction"] = self.allocator.seconds / seconds["total"]
        metrics |= self.allocator.metrics()
        if tau is not None:
            metrics["kl/tau"] = float(tau)
        return metrics

    def _rollout_rows(self, indices, prompt_index, rewards, lengths, counts, p_hat, z_norms) -> list[dict]:
        rows, seen = [], {}
        for r, q in enumerate(prompt_index.tolist()):
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


def _as_float(norm) -> float:
    """A gradient norm as a float (a DTensor under FSDP2)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
