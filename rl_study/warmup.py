"""A short supervised warm-up before RL (the RL study's starting point).

A randomly initialised model almost never answers a generated problem, so RL from scratch
spends its first hundreds of steps on zero-variance groups. A few hundred steps of
teacher-forced cross-entropy on the training problems (the answer and the end of sequence
token; the prompt is not a target) spread the initial success rates over (0, 1) instead,
with the harder families still low: the regime VIP's allocation is about.
"""

from __future__ import annotations

import torch


def _batch(tokenizer, tasks, device):
    """Right-padded prompt + answer + eos ids, labels -100 outside the answer."""
    eos = tokenizer.eos_token_id
    rows = [
        (
            tokenizer(t.question, add_special_tokens=False)["input_ids"],
            tokenizer(t.answer, add_special_tokens=False)["input_ids"] + [eos],
        )
        for t in tasks
    ]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    return ids.to(device), (ids != tokenizer.pad_token_id).long().to(device), labels.to(device)


def supervised_warmup(
    model, tokenizer, tasks, steps: int, generator: torch.Generator, batch_size: int = 64, learning_rate: float = 1e-3
) -> list[float]:
    """``steps`` AdamW steps of answer cross-entropy on batches drawn from ``tasks``; returns
    the loss of each step."""
    if steps < 0 or batch_size < 1 or not tasks:
        raise ValueError(
            f"steps must be >= 0, batch_size >= 1 and tasks non-empty; got {steps}, {batch_size}, {len(tasks)} tasks"
        )
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(0, len(tasks), (batch_size,), generator=generator, device=generator.device).tolist()
        ids, att, labels = _batch(tokenizer, [tasks[i] for i in pick], device)
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
