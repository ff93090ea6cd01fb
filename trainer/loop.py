"""The training loop: allocate -> generate -> reward -> advantages -> PPO epochs -> log -> save.

One step (``Trainer.train_step``):
1. draw ``prompts_per_step`` prompts (a seeded permutation per pass over the data);
2. counts n_q from trainer.allocation (uniform, VIP, or a baseline), sum n_q = budget;
3. sync the engine's weights with the policy (a no-op for transformers sampling) and sample
   sum n_q completions with it;
4. rewards (checked: one finite number per completion), advantages per group;
5. old log-probs (recomputed by the policy unless ``recompute_old_logprobs`` is off; when the
   step makes one optimizer step without a KL, they are the update pass's own, detached: the
   policy has not moved between the two passes, so the separate pass is skipped), the
   reference's log-probs and tau (none, fixed, or Corollary 3's tau* from |l| of the batch,
   theory.bounds.optimal_tau with n = prompts and K = floor(C / n)) when kl_coef > 0;
6. ``ppo_epochs`` passes over the rollouts, each split into ``mini_batches`` optimizer steps
   of micro-batches (gradient accumulation), AdamW, gradient clipping; the learning rate
   warms up linearly over ``warmup_steps`` rollout steps (VIP Table 9 counts in rollout steps);
7. the predictor learns the step's rewards; metrics and rollout-log rows are appended; a
   checkpoint every ``save_every`` steps.

With ``selection`` dapo or greso (trainer.selection), steps 1-4 run in generation rounds that
draw, skip (greso), sample and score prompts until ``prompts_per_step`` groups with unequal
rewards are kept; the step trains on those groups only, and its rollout log holds their rollouts.

A non-finite loss or gradient norm stops the run before the optimizer step with a
:class:`DivergenceError` naming the step and the quantity (nothing of that step is logged or
saved). Rank 0 writes the logs and checkpoints; a write that fails there (trainer.disk.WriteError)
stops every rank, as do a divergence and a resume without a usable checkpoint.

Randomness: a numpy Generator (prompt order, GP bandwidth; rank 0) and a torch Generator per
rank (sampling, mini-batch order) seeded by ``seed`` + rank, all saved in checkpoints. How
the work is split over several ranks: the :class:`Trainer` docstring.
"""

from __future__ import annotations

import dataclasses
import math
import sys
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

from trainer import distributed
from trainer.advantages import ADVANTAGES, rollout_advantages
from trainer.allocation import RolloutAllocator
from trainer.checkpoint import ResumeError, load_checkpoint, load_newest_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import PromptSampler, examples_digest, prompt_text
from trainer.distributed import World
from trainer.engines import build_engine
from trainer.experience import Experience, RolloutBatch, concat_batches, select_groups
from trainer.kl_clips import KL_CLIPS
from trainer.logprobs import completion_logprobs, float32_logprobs, gradient_norms, logprobs_in_micro_batches
from trainer.logs import RunLogs, resume_plan
from trainer.losses import (
    LOSSES,
    ClipSpec,
    aggregation_weights,
    clip_fractions,
    kl_penalty,
    policy_loss,
    sequence_log_ratio,
)
from trainer.precision import compute_context, compute_dtype
from trainer.rewards import checked_rewards, scaled
from trainer.rollout import NonFiniteLogits, Sampling
from trainer.run_folder import record_config
from trainer.selection import PromptSelector
from trainer.step_records import rollout_rows, step_metrics


class DivergenceError(ArithmeticError):
    """A non-finite loss or gradient norm; the message names the step and the quantity."""


class StoppedByRankZero(RuntimeError):
    """Raised on the other ranks when rank 0's part of the work (a write, a resume) failed."""


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

    def __init__(
        self,
        config: TrainConfig,
        policy,
        tokenizer,
        examples,
        reward_fn,
        reference=None,
        engine=None,
        world: World = World(),
    ):
        if config.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        if config.rollout_budget % world.size:
            raise ValueError(
                f"budget C = {config.rollout_budget} must be a multiple of the number of processes ({world.size}): "
                "each rank gets C / N rollouts"
            )
        if config.log_z_norm and world.size > 1:
            raise ValueError("log_z_norm needs a single process: FSDP averages each backward pass over ranks")
        if config.selection != "none" and world.size > 1:
            raise ValueError(
                f"selection={config.selection} needs a single process (selection=none with torchrun): "
                "its rounds keep a different number of rollouts on each rank"
            )
        self.cfg, self.policy, self.tokenizer, self.reference, self.reward_fn, self.world = (
            config,
            policy,
            tokenizer,
            reference,
            reward_fn,
            world,
        )
        self.examples = list(examples)
        self.data_digest = examples_digest(self.examples)
        self.prompts = [prompt_text(e, config, tokenizer) for e in self.examples]
        self.device = world.device if world.size > 1 else next(policy.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + world.rank)
        self.comm = distributed.Collectives(world, self.device)
        self.rng = self.sampler = self.allocator = self.selector = None
        if world.main:  # the prompt order and the predictor live on rank 0
            self.rng = np.random.default_rng(config.seed)
            self.sampler = PromptSampler(len(self.examples), config.prompts_per_step, self.rng)
            self.allocator = RolloutAllocator(
                config.allocation,
                [e.question for e in self.examples],
                config.rollout_budget,
                config.min_rollouts,
                config.max_rollouts,
                ADVANTAGES[config.advantage].allocation_objective,
                config.allocation_method,
                config.embedding,
                self.rng,
                config.predictor,
            )
            if config.selection != "none":
                self.selector = PromptSelector(
                    config.selection,
                    len(self.examples),
                    config.prompts_per_step,
                    config.rollout_budget // config.prompts_per_step,
                    config.max_generation_rounds,
                    config.reward_convention,
                )
        self.engine = engine or build_engine(config, policy, tokenizer, self.device, world)
        self.engine.check_prompt_lengths(self.prompts, config.max_new_tokens, [e.prompt_id for e in self.examples])
        self.sampling = Sampling(config.temperature, config.max_new_tokens)
        # each prompt's forward pass shared by its rollouts, but where checkpointing turns the cache off
        self.share_prompts = config.share_prompts and not config.activation_checkpointing
        self.measure_bf16_gap = (
            world.size == 1
            and self.device.type == "cpu"
            and compute_dtype(self.device, config.cpu_bf16) != torch.float32
        )
        self.clip = ClipSpec(*config.clip_range, config.ctpo_power)
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        self.step = 0
        self.output = Path(config.output_dir)
        self._resume_plan = None

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
            "selection": {} if self.selector is None else self.selector.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_generators": generators,
            "data_digest": self.data_digest,
        }

    def load_state_dict(self, state: dict) -> None:
        """Every rank loads the whole checkpoint and keeps its part, once it has checked that the
        checkpoint is of this run's data (trainer.data.examples_digest)."""
        saved = state.get("data_digest")
        if saved is not None and saved != self.data_digest:
            raise ResumeError(
                f"--resume: the dataset {self.cfg.dataset!r} is not the one the run was trained on (the checkpoint's"
                f" examples have SHA-256 {saved[:12]}..., the dataset's now {self.data_digest[:12]}...): a resume"
                " would train one run on two datasets. Restore the dataset, or start a new run in another output_dir"
            )
        if len(state["torch_generators"]) != self.world.size:
            raise ValueError(
                f"the checkpoint was written by {len(state['torch_generators'])} processes; "
                f"this run has {self.world.size}"
            )
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.policy, state["model"], options=full)
        set_optimizer_state_dict(self.policy, self.optimizer, state["optimizer"], options=full)
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["torch_generators"][self.world.rank])
        if self.world.main:
            self.allocator.load_state_dict(state["allocator"])
            self.sampler.load_state_dict(state["sampler"])
            if self.selector is not None:
                self.selector.load_state_dict(state["selection"])
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
        self._resume_plan = self._on_main(lambda: resume_plan(self.output, self.step))
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
        """The logs (kept up to the checkpoint's step when ``resumed``, as :meth:`resume` checked
        them; started afresh otherwise, any old ones moved aside), then config.yaml and the
        record of a resume's config changes."""
        logs = RunLogs(self.output, self._resume_plan if resumed else None, self.cfg.tensorboard)
        for path in logs.moved:
            print(f"the run's log as it was before this start is kept as {path}", file=sys.stderr)
        record_config(self.cfg, self.output, self.step)
        return logs

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

    @property
    def old_from_update(self) -> bool:
        """Whether the old log-probs are the update pass's own (detached): one optimizer step per
        rollout batch (ppo_epochs = mini_batches = 1) makes the policy of the old pass the policy of
        the update, and without a KL nothing needs them before the update (tau does). The ratio is
        then exp(logp - sg(logp)) = 1 with the policy gradient's gradient, as the separate pass
        gives up to rounding, for one forward pass less per step."""
        cfg = self.cfg
        return cfg.recompute_old_logprobs and cfg.ppo_epochs == 1 and cfg.mini_batches == 1 and cfg.kl_coef == 0

    def train_step(self) -> tuple[dict | None, list[dict] | None]:
        """One step (see the module docstring): collect the step's :class:`Experience`, learn
        from it; metrics and rollout-log rows on rank 0."""
        timer = _Timer()
        with timer("total"):
            exp = self._collect(timer)
            with timer("update"), self._compute():
                self.policy.train()
                update, logps = self._learn(exp)
            if exp.old is None:
                exp = dataclasses.replace(exp, old=logps)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self._observe(exp)
        self.step += 1
        token_stats = self._token_stats(exp)
        if not self.world.main:
            return None, None
        metrics = step_metrics(
            self.step, exp, token_stats | update | {"lr": lr}, timer.seconds, self.allocator, self.selector
        )
        return metrics, rollout_rows(self.step, exp, [self.examples[i].prompt_id for i in exp.indices])

    def _collect(self, timer) -> Experience:
        """Plan, generate, reward (or the selection's rounds of them), advantages, log-probs and
        tau of one step."""
        cfg = self.cfg
        if self.selector is None:
            indices, counts, p_hat, batch, rewards = self._planned_rollouts(timer)
        else:
            indices, batch, rewards = self._selected_rollouts(timer)
            counts, p_hat = np.bincount(batch.prompt_index, minlength=len(indices)), None
        prompt_index = np.repeat(np.arange(len(counts)), counts)
        _, mine = self._my_counts(prompt_index, len(counts))
        advantages = rollout_advantages(rewards, prompt_index, cfg.advantage)[mine]
        with timer("logprobs"), self._compute():
            old, ref = self._old_and_reference_logprobs(batch)
        with timer("precision_check"):
            float32_old = self._float32_old(batch)
        log_ratio, tau = self._kl_clip(old, ref, batch)
        return Experience(
            indices=indices,
            counts=counts,
            p_hat=p_hat,
            prompt_index=prompt_index,
            rewards=rewards,
            lengths=self.comm.concat(batch.completion_mask.sum(1).cpu().numpy()),
            batch=batch,
            advantages=torch.as_tensor(advantages, device=self.device, dtype=torch.float32),
            old=old,
            ref=ref,
            log_ratio=log_ratio,
            tau=tau,
            float32_old=float32_old,
            z_norms=gradient_norms(self.policy, batch, cfg.temperature, self.share_prompts) if cfg.log_z_norm else None,
        )

    def _planned_rollouts(self, timer):
        """(indices, counts, p_hat, this rank's rollouts, every rank's rewards) of the step's
        planned prompts."""
        indices, counts, p_hat = self._plan()
        prompt_index = np.repeat(np.arange(len(counts)), counts)
        local_counts, _ = self._my_counts(prompt_index, len(counts))
        self._sync_engine(timer)
        batch = self._generate(timer, indices, local_counts)
        with timer("reward"):
            rewards = self.comm.concat(self._rewards(indices, batch))
        return indices, counts, p_hat, batch, rewards

    def _selected_rollouts(self, timer):
        """(indices, rollouts, rewards) of the groups the selection keeps: rounds of
        draw, generate, reward and filter (trainer.selection) until ``prompts_per_step`` groups
        are kept, in draw order; one process."""
        selector = self.selector
        selector.start()
        self._sync_engine(timer)
        kept = []  # (indices, rollouts, rewards) of each round's kept groups
        while not selector.full:
            indices = selector.candidates(self.sampler, self.rng)
            if not indices.size:
                continue
            counts = np.full(indices.size, selector.group_size)
            batch = self._generate(timer, indices, counts)
            with timer("reward"):
                rewards = self._rewards(indices, batch)
            groups = np.split(rewards, np.cumsum(counts)[:-1])  # rollouts are sorted by prompt
            taken = selector.keep(indices, groups)
            if taken.size:
                kept.append((indices[taken], select_groups(batch, taken), np.concatenate([groups[q] for q in taken])))
        indices, batches, rewards = zip(*kept)
        batch = concat_batches(list(batches), self.tokenizer.pad_token_id)
        selector.finish()
        return np.concatenate(indices), batch, np.concatenate(rewards)

    def _sync_engine(self, timer) -> None:
        self.policy.eval()
        with timer("weight_sync"):
            self.engine.sync_weights(self.policy)

    def _generate(self, timer, indices, counts) -> RolloutBatch:
        with timer("generation"), self._compute():
            try:
                return self.engine.generate([self.prompts[i] for i in indices], counts, self.sampling, self.generator)
            except NonFiniteLogits as exc:
                raise DivergenceError(
                    f"training diverged at step {self.step + 1}: {exc} (generation); nothing of this step was logged"
                    " or saved"
                ) from None

    def _observe(self, exp: Experience) -> None:
        """The predictor learns the rewards of the prompts that got rollouts (VIP's released rule
        may drop some); rank 0."""
        if self.world.main:
            kept = np.flatnonzero(exp.counts > 0)
            groups = np.split(exp.rewards, np.cumsum(exp.counts)[:-1])  # rollouts are sorted by prompt
            self.allocator.observe(exp.indices[kept], [groups[q] for q in kept])

    # --- pieces of a step -------------------------------------------------------------------

    def _compute(self):
        """bfloat16 compute for float32 weights on a GPU, and on a CPU as ``cpu_bf16`` says
        (trainer.precision)."""
        return compute_context(self.device, self.cfg.cpu_bf16)

    def _float32_old(self, batch: RolloutBatch) -> torch.Tensor | None:
        """The step's first micro-batch's log-probs recomputed in float32, when the step computes in
        bfloat16 on a CPU (one process; under FSDP the shards' precision is its own), on the first
        step and every ``bf16_gap_every`` steps after it."""
        if not self.measure_bf16_gap or self.step % self.cfg.bf16_gap_every:
            return None
        rows = slice(0, self.cfg.micro_batch_size)
        return float32_logprobs(self.policy, batch, self.cfg.temperature, rows, self.share_prompts)

    def _rewards(self, indices, batch) -> np.ndarray:
        prompts = [self.prompts[indices[q]] for q in batch.prompt_index]
        answers = [self.examples[indices[q]].answer for q in batch.prompt_index]
        rows = [self.examples[indices[q]].prompt_id for q in batch.prompt_index]
        checks = {"timeout_s": self.cfg.reward_timeout_s, "rows": rows, "binary": self.cfg.binary_rewards}
        values = checked_rewards(self.reward_fn, prompts, batch.completions, answers, **checks)
        return np.asarray(scaled(values, self.cfg.reward_convention))

    def _old_and_reference_logprobs(self, batch):
        cfg = self.cfg
        passes = (cfg.temperature, cfg.micro_batch_size, self.share_prompts)
        ref = logprobs_in_micro_batches(self.reference, batch, *passes) if cfg.kl_coef > 0 else None
        if self.old_from_update:
            return None, ref
        if not cfg.recompute_old_logprobs:
            return batch.old_logprobs.float(), ref
        return logprobs_in_micro_batches(self.policy, batch, *passes), ref

    def _kl_clip(self, old, ref, batch):
        """Every rank's sequence log ratios l of the rollout policy to the reference, and the KL
        clip's tau of the whole step (None, None without a KL)."""
        if ref is None:
            return None, None
        log_ratio = self.comm.concat(sequence_log_ratio(old, ref, batch.completion_mask).cpu().numpy())
        return log_ratio, KL_CLIPS[self.cfg.kl_clip](np.abs(log_ratio), self.cfg)

    def _learn(self, exp: Experience) -> tuple[dict, torch.Tensor]:
        """``ppo_epochs`` passes over this rank's rollouts, each split into ``mini_batches``
        optimizer steps of micro-batches; the loss, gradient norm and (``log_clip_fractions``)
        every loss's clip fraction on the same tokens, computed once per mini-batch; and the last
        mini-batch's log-probs, detached (every rollout's, in batch order, when there is one)."""
        cfg, mask = self.cfg, exp.batch.completion_mask
        clips = {name: ClipSpec(*loss.default_clip, cfg.ctpo_power) for name, loss in LOSSES.items()} | {
            cfg.loss: self.clip
        }
        totals = {"loss": 0.0, "grad_norm": 0.0, "tokens": 0.0} | (
            {f"clip/{k}": 0.0 for k in clips} if cfg.log_clip_fractions else {}
        )
        updates = 0
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(exp.batch), generator=self.generator, device=self.device)
            for mini_batch, rows in enumerate(torch.tensor_split(order, cfg.mini_batches)):
                # in batch order (grouped by prompt) within the mini-batch: its gradient is the same
                # sum, and a micro-batch shares each prompt's forward pass among more rollouts
                rows = rows.sort().values
                tokens, sequences = self.comm.total(mask[rows].sum()), int(self.comm.total(len(rows)))
                weights = aggregation_weights(
                    mask[rows], cfg.aggregation, cfg.max_new_tokens, tokens=tokens, sequences=sequences
                )
                self.optimizer.zero_grad(set_to_none=True)
                mini_loss, logps = 0.0, []
                for start in range(0, len(rows), cfg.micro_batch_size):
                    micro = slice(start, start + cfg.micro_batch_size)
                    loss, logp = self._micro_loss(exp, rows[micro], weights[micro], sequences)
                    (loss * self.world.size).backward()  # FSDP averages gradients over ranks; the loss is their sum
                    mini_loss += float(loss.detach())
                    logps.append(logp)
                grad_norm = _as_float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
                where = f"PPO epoch {epoch + 1} of {cfg.ppo_epochs}, mini-batch {mini_batch + 1} of {cfg.mini_batches}"
                self._check_finite(where, loss=self.comm.total(mini_loss), gradient_norm=grad_norm)
                mini_tokens = float(mask[rows].sum())
                totals["loss"] += mini_loss
                totals["grad_norm"] += grad_norm
                totals["tokens"] += mini_tokens
                if cfg.log_clip_fractions:
                    old = torch.cat(logps) if exp.old is None else exp.old[rows]
                    for k, v in clip_fractions(torch.cat(logps), old, mask[rows], clips).items():
                        totals[f"clip/{k}"] += v * mini_tokens
                self.optimizer.step()
                updates += 1
        summed = {k: self.comm.total(v) for k, v in totals.items() if k != "grad_norm"}
        out = {k: v / summed["tokens"] for k, v in summed.items() if k.startswith("clip/")}
        return out | {"loss": summed["loss"] / updates, "grad_norm": totals["grad_norm"] / updates}, torch.cat(logps)

    def _check_finite(self, where: str, **quantities: float) -> None:
        """A DivergenceError when a quantity (summed over ranks, so every rank agrees) is not
        finite; called before the optimizer step, so the weights are those of the step before."""
        for name, value in quantities.items():
            if not math.isfinite(value):
                raise DivergenceError(
                    f"training diverged at step {self.step + 1}: the {name.replace('_', ' ')} is {value} ({where});"
                    " stopped before the optimizer step, nothing of this step was logged or saved"
                )

    def _micro_loss(self, exp: Experience, rows, weights, sequences):
        """The loss of the rollouts ``rows`` (and its KL term) and their log-probs, detached."""
        cfg, mask = self.cfg, exp.batch.completion_mask[rows]
        logp = completion_logprobs(self.policy, exp.batch, cfg.temperature, rows, self.share_prompts).float()
        old = logp.detach() if exp.old is None else exp.old[rows]
        loss = policy_loss(cfg.loss, logp, old, mask, exp.advantages[rows], weights, self.clip, sequences)
        if exp.ref is not None:
            kl = kl_penalty(sequence_log_ratio(logp, exp.ref[rows], mask), cfg.kl_estimator, exp.tau)
            loss = loss + cfg.kl_coef * kl.sum() / sequences
        return loss, logp.detach()

    def _token_stats(self, exp: Experience) -> dict:
        """Entropy estimate and sampler/trainer log-prob gap over every rank's tokens."""
        mask, old = exp.batch.completion_mask, exp.old
        gap = float((old - exp.batch.old_logprobs.float())[mask].abs().max())
        return {
            # -mean log pi of the sampled tokens: unbiased for the per-token entropy
            "entropy": self.comm.total(-old[mask].sum()) / self.comm.total(mask.sum()),
            "logprob_mismatch": self.comm.maximum(gap),
        }


def _as_float(norm) -> float:
    """A gradient norm as a float (a DTensor under FSDP2)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
