"""Prompts against the model's context: every prompt plus ``max_new_tokens`` must fit, checked at
start-up so that a too-long prompt is refused by its row before anything is generated (and
before an engine tries to allocate a KV cache for it).

The context is the model config's ``max_position_embeddings`` (the text model's, for configs
that nest one), else the tokenizer's ``model_max_length`` when it states a limit; with
``rollout_engine=vllm`` an explicit ``vllm_max_model_len`` is the context instead. A model that
states neither is not checked.
"""

from __future__ import annotations

from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from trainer.data import format_prompt

_SHOWN = 5  # rows named in the error


def model_context(model, tokenizer) -> int | None:
    """The number of positions ``model`` attends to (see the module docstring), or None."""
    config = getattr(model, "config", None)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        return int(positions)
    limit = getattr(tokenizer, "model_max_length", None)
    # a tokenizer that states no limit reports VERY_LARGE_INTEGER (transformers tokenization_utils_base.py:1066)
    return int(limit) if limit and limit < VERY_LARGE_INTEGER else None


def check_context(lengths_by_row, max_new_tokens: int, context: int | None, what: str = "model context") -> None:
    """Refuse prompts whose token length plus ``max_new_tokens`` exceeds ``context``.

    ``lengths_by_row`` maps a dataset row to its prompt's token length (a list: the row is the
    index); the error names the rows, their lengths, ``max_new_tokens`` and the context, called
    ``what``. ``context=None`` checks nothing.
    """
    if context is None:
        return
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens = {max_new_tokens} leaves no room for a prompt in the {what} of {context} tokens")
    items = lengths_by_row.items() if isinstance(lengths_by_row, dict) else enumerate(lengths_by_row)
    too_long = [(row, n) for row, n in items if n + max_new_tokens > context]
    if too_long:
        shown = ", ".join(f"row {row}: {n} tokens" for row, n in too_long[:_SHOWN])
        more = f" and {len(too_long) - _SHOWN} more" if len(too_long) > _SHOWN else ""
        raise ValueError(
            f"{len(too_long)} prompt(s) do not fit the {what} of {context} tokens with max_new_tokens = {max_new_tokens}"
            f" (at most {context - max_new_tokens} prompt tokens): {shown}{more}; shorten or drop them, or lower max_new_tokens"
        )


def check_prompts_fit(examples, tokenizer, model, config) -> None:
    """:func:`check_context` for the run's prompts as the policy sees them (template, chat
    template), tokenised as the engines encode them (no special tokens added)."""
    prompts = [format_prompt(e.question, config.template, tokenizer, config.chat_template) for e in examples]
    lengths = {e.prompt_id: len(ids) for e, ids in zip(examples, tokenizer(prompts, add_special_tokens=False)["input_ids"])}
    if config.rollout_engine == "vllm" and config.vllm_max_model_len is not None:
        check_context(lengths, config.max_new_tokens, config.vllm_max_model_len, "vllm_max_model_len")
    else:
        check_context(lengths, config.max_new_tokens, model_context(model, tokenizer))
