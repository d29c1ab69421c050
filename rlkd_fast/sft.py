"""Supervised warm-up on (question, program) pairs, as in ReFT: loss on the program only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from rlkd_fast.data import Problem
from rlkd_fast.prompts import program_body


def sft_batch(tokenizer, problems: Sequence[Problem], prompt: Callable[[str], str],
              max_prompt_tokens: int, max_new_tokens: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels, attention_mask)``, each [N, L]: prompt then program
    body + EOS; labels are -100 on the prompt and the padding.

    Prompt and body are tokenized separately, exactly as generation later sees them (the
    prompt alone, then the model's continuation).
    """
    rows, labels = [], []
    for p in problems:
        if p.program is None:
            raise ValueError(f"problem {p.id} has no program to learn from")
        a = tokenizer(prompt(p.question), add_special_tokens=False).input_ids
        a = a[-max_prompt_tokens:]
        b = tokenizer(program_body(p.program), add_special_tokens=False).input_ids
        b = b[:max_new_tokens - 1] + [tokenizer.eos_token_id]
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
