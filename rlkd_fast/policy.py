"""The student: a causal LM with a scalar value head on its shared trunk (PPO as in ReFT).

One trunk forward gives both the next-token logits of every response position and the value of
the state before each response token, so PPO pays for one forward per minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class SequenceBatch:
    """Prompts and responses laid side by side: ``input_ids = [prompt | response]``.

    prompt_ids     [N, P]  left padded
    prompt_mask    [N, P]  1 on real prompt tokens
    response_ids   [N, R]  right padded
    response_mask  [N, R]  1 on generated tokens (up to and including EOS)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, idx: torch.Tensor | slice) -> SequenceBatch:
        return SequenceBatch(self.prompt_ids[idx], self.prompt_mask[idx],
                             self.response_ids[idx], self.response_mask[idx])

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask,
                                                       self.response_ids, self.response_mask)))


class PolicyWithValue(nn.Module):
    """``lm`` (any HF causal LM) plus ``value_head``: Linear(hidden -> 1) on every position."""

    def __init__(self, lm: nn.Module, with_value: bool = True):
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1) if with_value else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1 / (hidden + 1))
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(next(lm.parameters()).dtype)

    @property
    def trunk(self) -> nn.Module:
        return self.lm.base_model

    def response_hidden(self, batch: SequenceBatch) -> torch.Tensor:
        """Hidden states [N, R, H] at the positions that predict each response token."""
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).long()
        # Positions count real tokens only, as generate() does for left-padded prompts.
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.trunk(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        prompt_len = batch.prompt_ids.shape[1]
        return hidden[:, prompt_len - 1:-1]

    def forward(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [N, R, V] for the response tokens and values [N, R] (fp32) of their states."""
        hidden = self.response_hidden(batch)
        logits = self.lm.get_output_embeddings()(hidden)
        values = None
        if self.value_head is not None:
            values = self.value_head(hidden).squeeze(-1).float()
        return logits, values

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.lm.save_pretrained(path)
        if self.value_head is not None:
            torch.save(self.value_head.state_dict(), path / "value_head.pt")

    def load_value_head(self, path: str | Path) -> None:
        file = Path(path) / "value_head.pt"
        if self.value_head is not None and file.exists():
            self.value_head.load_state_dict(torch.load(file, map_location="cpu"))
