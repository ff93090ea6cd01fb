"""Prompts and answers: datasets by hub name or local file, a synthetic arithmetic task, and the
prompt templates (VIP App. C.2 Fig. 4, or the question as is), wrapped in the tokenizer's chat
template with a chosen system prompt and, for the generated chat tasks, a pre-filled start of the
assistant's turn; :class:`PromptSampler` draws each step's prompts.

A dataset yields :class:`Example` rows (``prompt_id``, ``question``, ``answer``). Hub datasets
need the network (``datasets.load_dataset(name, split=...)``); local ``.jsonl``, ``.json``,
``.csv`` and ``.parquet`` files are read by ``datasets`` too. A column may be a dotted path into
nested fields (DAPO-Math-17k keeps its answer at ``reward_model.ground_truth``), and a prompt
given as a list of chat messages contributes its last user message.

Refused with a ValueError naming the file and the row (counted from 0) or line (from 1): a
prompt or answer that is missing, null or empty; an answer that is not text or a finite number
(a boolean, a list, an object); two rows with the same prompt and different answers (a
verifiable task has one answer per prompt; identical duplicates are kept, and drawn as often
as they occur); a line of a text file that is not UTF-8, and a line of a ``.jsonl`` file that
is not one JSON object (``datasets`` names neither).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from trainer.registry import choose

# VIP App. C.2, Figure 4: the template for mathematical reasoning, verbatim.
VIP_MATH_TEMPLATE = """Solve the following math problem step by step. The last line of your
response should be of the form Answer: $Answer (without quotes)
where $Answer is the answer to the problem. Do not wrap $Answer with
\\boxed{ }.

current question: {question}

Below are two examples for format reference.
Example question 1: Solve for x: 3x - 5 = 16.

Response:
Add 5 to both sides: 3x = 21.
Divide both sides by 3: x = 7.
Answer: 7

Solve the current question. Remember to put your answer on its own line
after "Answer:"."""

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class Example:
    """A problem: its dataset row, the question, the answer, and ``prefill``, text the
    assistant's turn starts with (empty for datasets; the generated chat tasks set it)."""

    prompt_id: int
    question: str
    answer: str
    prefill: str = ""


def arithmetic_task(n: int, rng: np.random.Generator, max_operand: int = 4) -> list[Example]:
    """``n`` problems ``a+b=`` with 0 <= a, b <= max_operand and their sums: a verifiable task that
    a tiny model learns in minutes on a CPU (the offline end-to-end test)."""
    if n < 1 or max_operand < 0:
        raise ValueError(f"n must be >= 1 and max_operand >= 0; got {n}, {max_operand}")
    a, b = rng.integers(0, max_operand + 1, size=(2, n))
    return [Example(i, f"{x}+{y}=", str(x + y)) for i, (x, y) in enumerate(zip(a.tolist(), b.tolist()))]


# name -> (sign, operand ranges a and b): the families of synthetic:mixed_arithmetic.
# SmolLM2-135M-Instruct's Mean@8 by family on the 80 problems of seed 0 (empty system prompt,
# pre-filled assistant turn; results/real_model): 0.79, 0.37, 0.63, 0.12 and 0.33.
ARITHMETIC_FAMILIES = {
    "add_1x1": ("+", (0, 9), (0, 9)),
    "sub_1x1": ("-", (0, 9), (0, 9)),
    "mul_1x1": ("*", (2, 9), (2, 9)),
    "add_2x2": ("+", (10, 99), (10, 99)),
    "mul_2x1": ("*", (10, 29), (2, 9)),
}
_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def mixed_arithmetic_task(n: int, rng: np.random.Generator) -> list[Example]:
    """``n`` chat problems "What is a + b?" drawn evenly from :data:`ARITHMETIC_FAMILIES` (in
    turn, operands uniform), each with the assistant's turn pre-filled with "a + b =" so that a
    chat model answers with the number first (the ``first_number`` reward reads it): a spread of
    difficulty that leaves many prompts with 0 < p < 1 for a small pretrained model."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    families = list(ARITHMETIC_FAMILIES.values())
    examples = []
    for i in range(n):
        sign, (a_low, a_high), (b_low, b_high) = families[i % len(families)]
        a, b = int(rng.integers(a_low, a_high + 1)), int(rng.integers(b_low, b_high + 1))
        expression = f"{a} {sign} {b}"
        examples.append(Example(i, f"What is {expression}?", str(_OPERATIONS[sign](a, b)), f"{expression} ="))
    return examples


# name -> task(n, rng): the datasets ``synthetic:<name>`` generates
SYNTHETIC_TASKS = {"arithmetic": arithmetic_task, "mixed_arithmetic": mixed_arithmetic_task}


def _field(row: dict, path: str, i: int):
    value = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"row {i}: column {path!r} not found in the dataset (row keys: {', '.join(row)})")
        value = value[key]
    return value


def _text(value, what: str, i: int) -> str:
    """``value`` as text; a null or empty value refused, naming the row."""
    if value is None:
        raise ValueError(f"row {i}: the {what} is null")
    text = str(value)
    if not text.strip():
        raise ValueError(f"row {i}: the {what} is empty")
    return text


def _question_text(value, column: str, i: int) -> str:
    if isinstance(value, list):  # chat messages: the last user turn is the question
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError(f"row {i}: a prompt given as chat messages must hold a user message")
        return _text(users[-1], f"last user message of {column!r}", i)
    return _text(value, f"prompt ({column!r})", i)


def _answer_text(value, column: str, i: int) -> str:
    """An answer as text: a string, or a finite number (not a boolean) written as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, type(None))):
        raise ValueError(
            f"row {i}: the answer ({column!r}) must be text or a number; got {type(value).__name__} {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"row {i}: the answer ({column!r}) must be finite; got {value}")
    return _text(value, f"answer ({column!r})", i)


def _example(row: dict, i: int, prompt_column: str, answer_column: str) -> Example:
    question = _question_text(_field(row, prompt_column, i), prompt_column, i)
    return Example(i, question, _answer_text(_field(row, answer_column, i), answer_column, i))


def _check_text_file(path: Path) -> None:
    """Every line of ``path`` is UTF-8, and for ``.jsonl`` one JSON object: a ValueError naming
    the file and the line otherwise, which datasets' own errors do not."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"dataset {path} line {number}: byte {exc.start + 1} is not UTF-8") from None
            if path.suffix != ".jsonl" or not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"dataset {path} line {number}: not JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"dataset {path} line {number}: a JSON {type(row).__name__}; each line must be one object (a row)"
                )


def _rows(dataset: str, split: str):
    import datasets

    path = Path(dataset)
    if path.is_dir() or path.suffix in LOCAL_FORMATS or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"dataset file {dataset} does not exist")
        if path.is_file() and path.suffix not in LOCAL_FORMATS:
            raise ValueError(
                f"dataset {dataset}: a {path.suffix or 'suffix-less'} file; use {', '.join(LOCAL_FORMATS)}"
            )
        if path.is_file() and path.stat().st_size == 0:  # datasets cannot parse an empty file; it holds no rows
            return []
        if path.suffix in TEXT_FORMATS:
            _check_text_file(path)
        try:
            if path.is_dir():  # a folder of data files, as datasets.load_dataset reads one
                return datasets.load_dataset(str(path), split=split)
            return datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        except Exception as exc:  # datasets' errors wrap the parser's; the message names the file
            cause = exc.__cause__ or exc
            raise ValueError(f"dataset {dataset}: datasets cannot read it ({type(cause).__name__}: {cause})") from exc
    return datasets.load_dataset(dataset, split=split)


def _refuse_conflicts(examples: list[Example]) -> None:
    """Two rows with the same prompt and different answers: a ValueError naming both rows."""
    first = {}
    for example in examples:
        seen = first.setdefault(example.question, example)
        if seen.answer != example.answer:
            raise ValueError(
                f"rows {seen.prompt_id} and {example.prompt_id} hold the same prompt with different answers"
                f" ({seen.answer!r} and {example.answer!r}); a verifiable task needs one answer per prompt"
            )


def load_examples(
    dataset: str,
    split: str = "train",
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    max_prompts=None,
    rng=None,
) -> list[Example]:
    """The examples of ``dataset`` (see the module docstring); raises on an empty dataset."""
    if dataset.startswith("synthetic:"):
        task = choose(SYNTHETIC_TASKS, dataset.split(":", 1)[1], "the synthetic task of dataset synthetic:<task>")
        examples = task(max_prompts or 64, rng if rng is not None else np.random.default_rng(0))
    else:
        examples = [
            _example(row, i, prompt_column, answer_column)
            for i, row in enumerate(_rows(dataset, split))
            if max_prompts is None or i < max_prompts
        ]
    if not examples:
        raise ValueError(f"dataset {dataset!r} (split {split!r}) holds no examples")
    _refuse_conflicts(examples)
    return examples


# name -> the template; {question} is replaced by the dataset's prompt
TEMPLATES = {"vip_math": VIP_MATH_TEMPLATE, "plain": "{question}"}


def format_prompt(
    question: str,
    template: str,
    tokenizer=None,
    chat_template: bool = True,
    system_prompt: str = "default",
    prefill: str = "",
) -> str:
    """The text the policy sees: the template filled in, wrapped in the tokenizer's chat template
    when it has one and ``chat_template`` is set, then ``prefill`` (the start of the
    assistant's turn). ``system_prompt``: ``default`` gives no system message (the chat
    template's own default applies: SmolLM2's prompts are 47 tokens instead of 31), ``none`` an empty one,
    anything else is the system message."""
    text = choose(TEMPLATES, template, "template").replace("{question}", question)
    if chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        if system_prompt != "default":
            messages.insert(0, {"role": "system", "content": "" if system_prompt == "none" else system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill


def examples_digest(examples) -> str:
    """SHA-256 of the examples a run draws from, in order (row, question, answer, prefill): kept
    in every checkpoint, so that a resume on a changed dataset is refused."""
    text = json.dumps([astuple(e) for e in examples], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_text(example: Example, config, tokenizer) -> str:
    """:func:`format_prompt` of ``example`` with a TrainConfig's template settings."""
    return format_prompt(
        example.question, config.template, tokenizer, config.chat_template, config.system_prompt, example.prefill
    )


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
