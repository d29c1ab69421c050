"""The student: a causal LM with a scalar value head on its shared trunk (PPO as in ReFT).

One forward of the LM gives both the next-token logits of every response position and the value
of the state before each response token, so PPO pays for one forward per minibatch.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlkd_fast.models import head_width, lm_trunk, output_head, text_config


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
    """``lm`` (any HF causal LM) plus ``value_head``: Linear(width -> 1) on every position.

    The logits come from ``lm``'s own forward, the path ``generate`` samples from, so any
    transform a model applies after its head (Gemma-2's soft-capping, Cohere's logit scale) is
    in the training log-probs too. The value head reads what the LM head reads (captured by a
    hook during that forward): its width is the head's input width, which is not always
    ``config.hidden_size`` (OPT-350m projects 1024 -> 512; a composite config such as Gemma-3's
    image-text class keeps it in its text config).

    Parameters of a composite model that a text-only forward never reaches (a vision tower) are
    frozen, so data-parallel training does not wait for gradients that never come.
    """

    def __init__(self, lm: nn.Module, with_value: bool = True):
        super().__init__()
        self.lm = lm
        width = head_width(lm)
        self.value_head = nn.Linear(width, 1) if with_value else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1 / (width + 1))
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(output_head(lm).weight.dtype)
        # Models without ``logits_to_keep`` compute every position's logits (and are sliced).
        self._keeps_logits = "logits_to_keep" in inspect.signature(lm.forward).parameters
        self._shares_prompts = _can_share_prompts(lm) and self._keeps_logits
        _freeze_unreached(lm)

    @contextlib.contextmanager
    def _head_inputs(self) -> Iterator[list[torch.Tensor]]:
        """A list that collects what the LM head reads in each forward inside the block (the
        value head's input); stays empty without a value head."""
        seen: list[torch.Tensor] = []
        hook = None
        if self.value_head is not None:
            hook = output_head(self.lm).register_forward_hook(
                lambda _module, args, _out: seen.append(args[0]))
        try:
            yield seen
        finally:
            if hook is not None:
                hook.remove()

    def forward(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [N, R, V] for the response tokens (those of the position before each) and
        values [N, R] (fp32) of those positions; values are None without a value head.

        Where the model allows it (a plain KV cache; no dropout active), each distinct prompt
        runs once and its keys/values serve every row that shares it (GRPO's K samples of a
        question), so a prompt costs one row, not K. Every batch then takes that path, so the
        same row gives the same values whatever else is in its batch."""
        if self._shares_prompts and not _dropout_active(self.lm):
            return self._forward_shared_prompts(batch)
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).long()
        # Positions count real tokens only, as generate() does for left-padded prompts.
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        keep = batch.response_ids.shape[1] + 1  # the last prompt position .. the last token
        kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
        with self._head_inputs() as seen:
            out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=False, **kwargs)
        logits = out.logits[:, -keep:-1]
        values = None
        if self.value_head is not None:
            if len(seen) != 1:
                raise RuntimeError(f"the LM head of {type(self.lm).__name__} ran {len(seen)} "
                                   "times in one forward; the value head cannot tell which "
                                   "hidden states to read")
            values = self.value_head(seen[0][:, -keep:-1]).squeeze(-1).float()
        return logits, values

    def _forward_shared_prompts(self, batch: SequenceBatch):
        """:meth:`forward` with each distinct prompt run once: the prompts (with a cache),
        then every row's response tokens on its prompt's keys/values (differentiable)."""
        from transformers import DynamicCache

        width = batch.prompt_ids.shape[1]
        rows = torch.cat([batch.prompt_ids, batch.prompt_mask.long()], dim=1)
        distinct, which = torch.unique(rows, dim=0, return_inverse=True)
        ids, mask = distinct[:, :width], distinct[:, width:]
        full_mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1).long()
        positions = (full_mask.cumsum(1) - 1).clamp(min=0)  # as the one-pass forward's
        with self._head_inputs() as seen:
            cache = DynamicCache()
            out = self.lm(input_ids=ids, attention_mask=mask,
                          position_ids=(mask.cumsum(1) - 1).clamp(min=0), cache=cache,
                          use_cache=True, logits_to_keep=1)
            logits = [out.logits[:, -1:][which]]
            length = batch.response_ids.shape[1]
            if length > 1:  # the responses' own positions predict their next tokens
                shared = DynamicCache()
                for i, layer in enumerate(cache.layers):
                    shared.update(layer.keys[which], layer.values[which], i)
                out = self.lm(input_ids=batch.response_ids[:, :-1],
                              attention_mask=full_mask[:, :-1],
                              position_ids=positions[:, width:-1], cache=shared, use_cache=True)
                logits.append(out.logits)
        values = None
        if self.value_head is not None:
            hidden = torch.cat([seen[0][:, -1:][which], *seen[1:]], dim=1)
            values = self.value_head(hidden).squeeze(-1).float()
        return torch.cat(logits, dim=1), values

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.lm.save_pretrained(path)
        if self.value_head is not None:
            torch.save(self.value_head.state_dict(), path / "value_head.pt")

    def load_value_head(self, path: str | Path) -> None:
        file = Path(path) / "value_head.pt"
        if self.value_head is not None and file.exists():
            self.value_head.load_state_dict(torch.load(file, map_location="cpu"))


def frozen_copy(policy: PolicyWithValue) -> PolicyWithValue:
    """The reference model: a frozen copy of the policy's LM (no value head), in eval mode."""
    ref = PolicyWithValue(copy.deepcopy(policy.lm), with_value=False)
    ref.requires_grad_(False)
    return ref.eval()


def _freeze_unreached(lm: nn.Module) -> None:
    """Freeze what a text-only forward of a composite model (one with a text sub-config) never
    reaches: parameters outside its language model and LM head."""
    if text_config(lm.config) is lm.config:
        return
    trunk = lm_trunk(lm)
    if trunk is None:
        return
    reached = {id(p) for p in trunk.parameters()}
    reached |= {id(p) for p in output_head(lm).parameters()}
    for param in lm.parameters():
        if id(param) not in reached:
            param.requires_grad_(False)


def _can_share_prompts(lm: nn.Module) -> bool:
    """Whether prompts can run once and their keys/values be reused: a model the static decode
    loop serves (its forward takes a cache and positions) whose layers all attend fully (a
    sliding window keeps only part of the prompt's keys)."""
    from transformers import DynamicCache

    from rlkd_fast.decode import cache_unsupported_reason

    if cache_unsupported_reason(lm) is not None:
        return False
    params = inspect.signature(lm.forward).parameters
    if "cache" not in params:  # older transformers: a cache placed by cache_position
        return False
    probe = DynamicCache(config=lm.config.get_text_config(decoder=True))
    return not any(getattr(probe, "is_sliding", [True]))


def _dropout_active(lm: nn.Module) -> bool:
    """Dropout that would draw differently for each row of a shared prompt: in train mode, any
    rate above 0 where ``models.disable_dropout`` looks (modules, float attributes)."""
    if not lm.training:
        return False
    for module in lm.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return True
        if any("drop" in k.lower() and isinstance(v, float) and v > 0
               for k, v in vars(module).items()):
            return True
    return False
