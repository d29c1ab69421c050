"""Supervised warm-up on (question, program) pairs, as in ReFT: loss on the program only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from rlkd_fast.data import Problem
from rlkd_fast.prompts import program_body
from rlkd_fast.rollout import encode_bounded


def sft_batch(tokenizer, problems: Sequence[Problem], prompt: Callable[[str], str],
              max_prompt_tokens: int, max_new_tokens: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels, attention_mask)``, each [N, L]: prompt then program
    body + EOS; labels are -100 on the prompt and the padding.

    Prompt and body are tokenized separately, exactly as generation later sees them (the
    prompt alone, then the model's continuation); the prompt keeps its last
    ``max_prompt_tokens`` tokens, the body its first ``max_new_tokens - 1``.
    """
    rows, labels = [], []
    missing = [p.id for p in problems if p.program is None]
    if missing:
        raise ValueError(f"problem {missing[0]} has no program to learn from")
    # Bounded: only about as much text is tokenized as the cuts keep (a huge question costs
    # what a short one does).
    prompts, _ = encode_bounded(tokenizer, [prompt(p.question) for p in problems],
                                max_prompt_tokens, "last")
    bodies, _ = encode_bounded(tokenizer, [program_body(p.program) for p in problems],
                               max_new_tokens - 1, "first")
    for a, b in zip(prompts, bodies, strict=True):
        b = b + [tokenizer.eos_token_id]
        rows.append(a + b)
        labels.append([-100] * len(a) + b)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    lab = torch.full((len(rows), width), -100)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, :len(r)] = torch.tensor(r)
        lab[i, :len(lb)] = torch.tensor(lb)
        att[i, :len(r)] = 1
    return ids, lab, att


def sft_loss(model, tokenizer, problems: Sequence[Problem], prompt: Callable[[str], str],
             max_prompt_tokens: int, max_new_tokens: int, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy of the program tokens (and EOS) given the prompt."""
    ids, lab, att = (t.to(device) for t in sft_batch(tokenizer, problems, prompt,
                                                     max_prompt_tokens, max_new_tokens))
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                           lab[:, 1:].reshape(-1), ignore_index=-100)
