"""The trainer's configuration: one flat dataclass, loadable from YAML, overridable by ``--set``.

Defaults are the papers' settings where they give one: VIP App. C Table 9 (AdamW, learning
rate 1e-6, 20 warm-up steps, 512 prompts per step, 8 responses per prompt, temperature 1.0,
10,240 new tokens) and CTPO §4.1 (eps_low = 0.025, eps_high = 0.05; the sqrt(t) power is
theory.importance.CTPO_CLIP). The clip ranges of GRPO and GSPO default to theory.importance's
GRPO_CLIP and GSPO_CLIP. KL is off (beta = 0), as in VIP Assumption 3.1.

The config is flat so that every field is one ``--set name=value`` away; the groups below are
comments, not nesting.

Every value goes through :func:`coerce` by its field's declared type, whether it comes from
YAML (typed by PyYAML under YAML 1.1, where ``1e-3`` is a string and ``1.0e-3`` a float), a
``--set`` string or Python: an int field takes integers and integral floats or numeric strings
(``3``, ``3.0``, ``"3e0"``) and refuses the rest (``2.7``, ``"2.5e0"``); a float field takes
numbers and numeric strings and refuses NaN and infinities; a bool field takes a bool or
true/false, yes/no, on/off, 1/0 as text, nothing else; a str field takes a non-empty string; an
optional field also takes null (``none``, ``null`` or ``~`` as text). :meth:`TrainConfig.validate`
then checks each range, naming the field and the range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from prompt_features import EMBEDDINGS
from theory.allocation import METHODS
from theory.allocation_rules import ALLOCATION_RULES
from theory.importance import CTPO_CLIP
from theory.predictors import PREDICTORS
from trainer.advantages import ADVANTAGES
from trainer.data import TEMPLATES
from trainer.engines import ENGINES
from trainer.kl_clips import KL_CLIPS
from trainer.option_names import AGGREGATIONS, CPU_BF16, KL_ESTIMATORS, LOSS_CLIPS
from trainer.registry import choose
from trainer.rewards import BUILT_IN as REWARDS
from trainer.rewards import REWARD_CONVENTIONS, REWARD_TIMEOUT_S
from trainer.selection import SELECTIONS

# how VIP's problem (5) is solved: theory.allocation's methods that give whole rollout counts
ALLOCATION_METHODS = {name: method for name, method in METHODS.items() if method.integer}
DTYPES = ("auto", "float32", "bfloat16", "float16")  # of the trainable weights (trainer.models.resolve_dtype)
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_SEED = 2**62
TEMPERATURE = (1e-5, 1e5)  # sampling temperature; the range refused past its ends is in TrainConfig.validate
# option -> the table its value is looked up in (trainer.registry.choose): the only lists of valid names
CHOICES = {
    "loss": LOSS_CLIPS,
    "advantage": ADVANTAGES,
    "allocation": ALLOCATION_RULES,
    "allocation_method": ALLOCATION_METHODS,
    "selection": SELECTIONS,
    "predictor": PREDICTORS,
    "aggregation": AGGREGATIONS,
    "kl_estimator": KL_ESTIMATORS,
    "kl_clip": KL_CLIPS,
    "reward_convention": REWARD_CONVENTIONS,
    "template": TEMPLATES,
    "embedding": EMBEDDINGS,
    "rollout_engine": ENGINES,
    "cpu_bf16": CPU_BF16,
}


@dataclass
class TrainConfig:
    # --- model and data -------------------------------------------------------------------
    # hub name, local folder, .gguf file, packaged model (smollm2-135m-instruct; trainer.model_sources),
    # or tiny:qwen2 / tiny:llama (built locally)
    model: str = "tiny:qwen2"
    ref_model: str | None = None  # reference policy when kl_coef > 0; None: the initial model
    dtype: str = "auto"  # trainable weights; auto: float32 (bf16 compute on GPU; trainer.models.resolve_dtype)
    device: str = "auto"
    cpu_bf16: str = "off"  # bfloat16 autocast on a CPU: off, on, auto (where native; trainer.precision)
    bf16_gap_every: int = 1  # steps between float32 recomputations that measure the bfloat16 log-prob gap
    cpu_keep_freed_memory: bool = True  # glibc reuses a step's freed large blocks (trainer.cpu_memory)
    dataset: str = "synthetic:arithmetic"  # hub name, a .jsonl/.json/.parquet file, or synthetic:<task> (trainer.data)
    split: str = "train"
    prompt_column: str = "prompt"  # dotted paths reach nested fields (reward_model.ground_truth)
    answer_column: str = "answer"
    max_prompts: int | None = None
    template: str = "vip_math"  # VIP App. C.2 Fig. 4, or plain (the question as is)
    chat_template: bool = True  # wrap in the tokenizer's chat template when it has one
    system_prompt: str = "default"  # default: the chat template's own; none: an empty one; else its text
    # --- rewards ----------------------------------------------------------------------------
    reward: str = "answer_line"  # or "module:function" for your own callable
    reward_convention: str = "binary"  # binary: 0/1; signed: -1/+1 (VIP's propositions)
    reward_timeout_s: float = REWARD_TIMEOUT_S  # per call of the reward (one per step, on all its completions)
    # --- rollouts and allocation ----------------------------------------------------------
    prompts_per_step: int = 512
    budget: int | None = None  # C, rollouts per step; None: 8 per prompt
    min_rollouts: int = 4  # L
    max_rollouts: int = 32  # U
    allocation: str = "uniform"
    allocation_method: str = "exact"  # theory.allocation.allocate's method
    predictor: str = "gp_binomial"  # p_hat of all rules but uniform: GP + binomial noise, gp, gp_released, ridge
    selection: str = "none"  # which groups a step trains on: none, dapo, greso (trainer.selection)
    max_generation_rounds: int = 10  # rounds per step for dapo / greso (verl's run_dapo_qwen2.5_32b.sh)
    embedding: str = "auto"  # VIP's GP features: sentence-transformers if installed, else hashed words
    rollout_engine: str = "transformers"  # or vllm (the gpu extra; one colocated engine per process)
    vllm_gpu_memory_utilization: float = 0.3
    vllm_max_model_len: int | None = None
    # tokens per vLLM scheduler step; vLLM's own default for the LLM class is 16384 on a GPU of
    # >= 70 GiB other than an A100 (H100, H200) and 8192 elsewhere (vllm 0.31/0.32
    # vllm/engine/arg_utils.py:2894-2985): set here so that every card schedules alike
    vllm_max_num_batched_tokens: int = 16384
    vllm_sleep: bool = True  # release vLLM's GPU memory while training
    temperature: float = 1.0
    max_new_tokens: int = 10_240
    generation_batch_size: int = 64
    share_prompts: bool = True  # each prompt run once for all its rollouts (trainer.rollout, trainer.logprobs)
    recompute_old_logprobs: bool = True
    # --- advantages and losses --------------------------------------------------------------
    advantage: str = "dr_grpo"
    loss: str = "grpo"
    clip_low: float | None = None  # None: the loss's default (trainer.option_names.LOSS_CLIPS)
    clip_high: float | None = None
    ctpo_power: float = CTPO_CLIP[2]
    aggregation: str = "token_mean"
    # --- KL (RLHF-gen §6.1) -----------------------------------------------------------------
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    kl_clip: str = "none"
    kl_tau: float = 1.0  # the fixed tau
    kl_delta: float = 0.1  # delta of alpha_{n,K,delta} in the tau* rule
    # --- optimisation -----------------------------------------------------------------------
    steps: int = 100
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    ppo_epochs: int = 1
    mini_batches: int = 1  # optimizer steps per PPO epoch
    micro_batch_size: int = 8  # rollouts per forward/backward (gradient accumulation)
    activation_checkpointing: bool = False  # recompute activations in the backward pass (long completions)
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    output_dir: str = "runs/default"
    save_every: int = 10
    keep_checkpoints: int = 2
    log_clip_fractions: bool = True  # every loss's clip fraction on the same tokens, once per mini-batch
    log_z_norm: bool = False  # z_norm per rollout in the rollout log: one backward pass each
    tensorboard: bool = True  # when tensorboard is installed
    progress: bool = True

    def __post_init__(self):
        for name, kind in _field_types().items():
            setattr(self, name, coerce(name, getattr(self, name), kind))
        self.validate()

    @property
    def rollout_budget(self) -> int:
        return self.budget if self.budget is not None else 8 * self.prompts_per_step

    @property
    def binary_rewards(self) -> bool:
        """Whether the rewards must be 0/1: every allocation but uniform learns p_hat from them
        (VIP's GP, Algorithm 1, and the ridge predictor model success or failure), and GRESO's
        skip reads all-correct and all-wrong groups."""
        return ALLOCATION_RULES[self.allocation].uses_p_hat or SELECTIONS[self.selection].skips_prompts

    @property
    def clip_range(self) -> tuple[float, float]:
        low, high = LOSS_CLIPS[self.loss]
        return (low if self.clip_low is None else self.clip_low, high if self.clip_high is None else self.clip_high)

    def validate(self) -> None:
        """Every check that needs no model or data: a bad config fails before anything loads."""
        for name, table in CHOICES.items():
            choose(table, getattr(self, name), name)
        if ALLOCATION_RULES[self.allocation].uses_posterior and not PREDICTORS[self.predictor].has_posterior:
            with_posterior = ", ".join(name for name, entry in PREDICTORS.items() if entry.has_posterior)
            raise ValueError(
                f"predictor={self.predictor} has no posterior, and allocation={self.allocation} allocates on the "
                f"predictor's posterior E[p (1 - p)]: with it, predictor must be one of {with_posterior}"
            )
        if self.reward not in REWARDS and ":" not in self.reward:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)} or 'module:function'; got {self.reward!r}")
        for name in _AT_LEAST_ONE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0; got {self.warmup_steps}")
        if not 0 <= self.seed <= MAX_SEED:  # seed + rank must fit torch.Generator's 64 bits
            raise ValueError(f"seed must be an integer in [0, 2**62]; got {self.seed}")
        self._validate_budget()
        self._validate_selection()
        choose(DTYPES, self.dtype, "dtype")
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index); got {self.device!r}")
        if not TEMPERATURE[0] <= self.temperature <= TEMPERATURE[1]:
            raise ValueError(
                f"temperature must lie in [{TEMPERATURE[0]:g}, {TEMPERATURE[1]:g}] (below it the logits / temperature"
                f" overflow, above it every token is equally likely); got {self.temperature}"
            )
        if not 0 < self.learning_rate <= 1:
            raise ValueError(
                f"learning_rate must lie in (0, 1] (AdamW moves every weight by about lr); got {self.learning_rate}"
            )
        for name in ("max_grad_norm", "reward_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("kl_coef", "weight_decay", "kl_tau", "ctpo_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        low, high = self.clip_range
        if not (0 <= low < 1 and high >= 0):
            raise ValueError(f"clip_low must lie in [0, 1) and clip_high be >= 0; got {low}, {high}")
        refusal = ENGINES[self.rollout_engine].refusal(self)
        if refusal:
            raise ValueError(refusal)
        if not 0 < self.kl_delta < 1:
            raise ValueError(f"kl_delta must lie in (0, 1); got {self.kl_delta}")
        if self.mini_batches > self.prompts_per_step * self.min_rollouts:
            raise ValueError(
                f"mini_batches must be <= the rollouts per step ({self.prompts_per_step * self.min_rollouts}); "
                f"got {self.mini_batches}"
            )

    def _validate_budget(self) -> None:
        b, c, lo, hi = self.prompts_per_step, self.rollout_budget, self.min_rollouts, self.max_rollouts
        need = ALLOCATION_RULES[self.allocation].min_lower
        if lo < need:
            why = (
                "VIP's objective is convex only for n >= 3 (Theorem 5.1)"
                if need == 3
                else "a group baseline needs n >= 2"
            )
            raise ValueError(f"min_rollouts (L) must be >= {need} with allocation={self.allocation}: {why}; got {lo}")
        if hi < lo:
            raise ValueError(f"max_rollouts (U) must be >= min_rollouts (L) = {lo}; got {hi}")
        if not b * lo <= c <= b * hi:
            raise ValueError(
                f"budget C = {c} is infeasible for {b} prompts with L = {lo}, U = {hi}: "
                f"it must lie in [B*L, B*U] = [{b * lo}, {b * hi}]"
            )

    def _validate_selection(self) -> None:
        """dapo and greso give every rolled-out prompt n = C / B rollouts (trainer.selection)."""
        if self.selection == "none":
            return
        if self.allocation != "uniform":
            raise ValueError(
                f"selection={self.selection} needs allocation=uniform (every prompt gets C / B rollouts); "
                f"got allocation={self.allocation}"
            )
        if self.rollout_budget % self.prompts_per_step:
            raise ValueError(
                f"selection={self.selection} needs budget C = {self.rollout_budget} to be a multiple of "
                f"prompts_per_step = {self.prompts_per_step} (n = C / B rollouts per prompt)"
            )


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


# Integer fields that count something: >= 1 (None, where the field is optional, means "unset").
_AT_LEAST_ONE = (
    "prompts_per_step",
    "max_new_tokens",
    "generation_batch_size",
    "steps",
    "ppo_epochs",
    "mini_batches",
    "micro_batch_size",
    "save_every",
    "keep_checkpoints",
    "max_prompts",
    "budget",
    "vllm_max_model_len",
    "vllm_max_num_batched_tokens",
    "max_generation_rounds",
    "bf16_gap_every",
)
_TRUE, _FALSE, _NULL = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null", "~")
_EXPECTED = {int: "an integer", float: "a finite number", bool: "true or false", str: "a non-empty string"}


def _as_int(name: str, value) -> int:
    """Integers, and integral floats or numeric strings ("3", 3.0, "3e0")."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)  # exact, however many digits
    number = _as_float(name, value, _EXPECTED[int])
    if not number.is_integer():
        raise ValueError(f"{name} must be {_EXPECTED[int]}; got {value!r}")
    return int(number)


def _as_float(name: str, value, expected: str = "a finite number") -> float:
    """Numbers and numeric strings ("1e-3"); NaN and infinities refused."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be {expected}; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return number


def _as_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name} must be {_EXPECTED[bool]}; got {value!r}")


def _as_str(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be {_EXPECTED[str]}; got {value!r} ({type(value).__name__}: quote it in YAML)")
    if not value.strip():
        raise ValueError(f"{name} must be {_EXPECTED[str]}; got {value!r}")
    return value


_AS = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str}


def coerce(name: str, value, kind) -> object:
    """``value`` as the declared type ``kind`` of field ``name`` (int, float, bool, str, or one of
    them | None), by the rules of the module docstring; raises ValueError naming ``name``."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    base = next(k for k in kind.__args__ if k is not type(None)) if optional else kind
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NULL)):
        return None
    if value is None:
        raise ValueError(f"{name} must be {_EXPECTED[base]}; got null")
    return _AS[base](name, value)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """``values`` updated with ``name=value`` strings, each coerced to its field's type."""
    types_ = _field_types()
    values = dict(values)
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--set takes name=value; got {item!r}")
        if name not in types_:
            raise ValueError(f"--set {name}: unknown config field; known: {', '.join(types_)}")
        values[name] = coerce(f"--set {name}", text.strip(), types_[name])
    return values


# What makes a run offline and small enough for a CPU in seconds: the two-layer Qwen2-architecture
# model built locally with random weights (trainer.models.tiny_model), the question as is, the
# first number of the completion as its answer, hashed words as the GP's features (no
# sentence-transformers model), no warm-up. trainer/configs/tiny_cpu.yaml holds the same fields
# (tests/test_trainer_config.py checks it); the tests, the RL study, the GPU smoke check and the
# TRL benchmark build their configs from these.
TINY_OFFLINE = {
    "model": "tiny:qwen2",
    "template": "plain",
    "chat_template": False,
    "reward": "first_number",
    "embedding": "hashed",
    "warmup_steps": 0,
}
QUIET = {"tensorboard": False, "progress": False}  # for runs inside another program


def tiny_config(**fields) -> TrainConfig:
    """A validated TrainConfig of :data:`TINY_OFFLINE`, quiet (:data:`QUIET`), with ``fields``
    setting the sizes and anything else."""
    return TrainConfig(**(TINY_OFFLINE | QUIET | fields))


def load_config(path=None, overrides=()) -> TrainConfig:
    """The YAML file at ``path`` (if any) with ``overrides`` applied, validated."""
    import yaml

    values = {}
    if path is not None:
        values = _read_yaml(Path(path), yaml) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must be a mapping of field: value")
        types_ = _field_types()
        unknown = sorted(set(values) - set(types_))
        if unknown:
            raise ValueError(f"{path}: unknown config field(s) {', '.join(unknown)}")
        values = {name: coerce(f"{path}: {name}", value, types_[name]) for name, value in values.items()}
    return TrainConfig(**apply_overrides(values, list(overrides)))


def _read_yaml(path: Path, yaml):
    """The YAML document in ``path``; a ValueError naming the file (and the line of a syntax
    error) for a folder, a missing or unreadable file, a non-UTF-8 byte or bad YAML."""
    if path.is_dir():
        raise ValueError(f"--config {path} is a folder; give a YAML file (trainer/configs/*.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config {path}: byte {exc.start} is not UTF-8; a config is a YAML text file") from None
    except OSError as exc:
        raise ValueError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"--config {path}:{where}: not valid YAML ({problem})") from None


def save_config(config: TrainConfig, path) -> Path:
    """Write the resolved config as YAML (what ``load_config`` reads back)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    tmp.replace(path)
    return path
