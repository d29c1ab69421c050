"""Rollout generation: prompts in, padded prompt/response tensors and decoded texts out.

Used for PPO/GRPO rollouts, evaluation and judge-quality sampling. Prompts are sorted by length
before batching so each batch pads little; the rows come back in the caller's order, with the
``num_samples`` samples of one prompt on consecutive rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from rlkd_fast.decode import decode, unsupported_reason
from rlkd_fast.models import model_device

#: Generation engines: "static" is :func:`rlkd_fast.decode.decode` (a static KV cache, a CUDA
#: graph per step on CUDA), "hf" is HF ``generate``; "auto" takes "static" where the model and
#: the arguments allow it (see :func:`engine_for`).
ENGINES = ("auto", "static", "hf")


@dataclass
class Rollout:
    """A batch of generations; N = len(prompts) * num_samples rows.

    Attributes:
        prompt_ids: [N, P] int64, left padded with the pad id.
        prompt_mask: [N, P] int64, 1 on real prompt tokens.
        response_ids: [N, R] int64, right padded with the pad id.
        response_mask: [N, R] int64, 1 on generated tokens up to and including the first EOS
            (or the last generated token when the row stopped without one).
        texts: N decoded responses, special tokens skipped.
        prompt_index: [N] int64, the source prompt of each row.
        logprobs: [N, R] float32, each response token's log-prob under
            softmax(logits / temperature) over the whole vocabulary (no top-k/top-p cut) as
            the sampling pass computed it; 0 outside ``response_mask``. None from HF ``generate``
            (the "hf" engine), which would have to keep every step's [N, V] logits for them.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    prompt_index: torch.Tensor
    logprobs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` of prompt + response, [N, P + R] each, for the
        trainer's forward passes (response logits start at column P - 1)."""
        ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)
        return ids, mask


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as ``([B, L] int64 ids, [B, L] int64 mask)``, padded on ``side``."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


#: Characters per token assumed when sizing the first window of a long text (real tokenizers
#: average 3-5; the window grows when the guess is short).
_CHARS_PER_TOKEN = 8
#: Tokens tokenized beyond the limit, dropped at the window's edge: the few tokens next to an
#: artificial cut may merge differently from the whole text's.
_MARGIN = 16
_SPACE = re.compile(r"\s")


def encode_bounded(
    tokenizer, texts: Sequence[str], max_tokens: int | None, keep: str = "last",
    add_special_tokens: bool = False,
) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text cut to its last (``keep="last"``) or first ``max_tokens`` tokens,
    tokenizing only as much text as the cut keeps, and whether each text was cut.

    A long text is tokenized from a window at the kept end (starting or ending at a space, so
    words split as in the whole text) that grows until it yields ``max_tokens`` + a margin, so
    the work and memory are bounded by the limit, not by the text: a 200 MB question costs what a
    few KB do. The kept tokens are the whole text's (those near the window's edge, which could
    merge differently, fall in the dropped margin). ``max_tokens=None`` keeps everything.
    """
    if keep not in ("last", "first"):
        raise ValueError(f"keep must be 'last' or 'first', got {keep!r}")
    if max_tokens is None:
        ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"] \
            if texts else []
        return ids, [False] * len(ids)
    window = _CHARS_PER_TOKEN * (max_tokens + _MARGIN)
    short = [i for i, t in enumerate(texts) if len(t) <= window]
    out: list[list[int]] = [[] for _ in texts]
    if short:  # one batched call, as before, for the usual texts
        encoded = tokenizer([texts[i] for i in short],
                            add_special_tokens=add_special_tokens)["input_ids"]
        for i, ids in zip(short, encoded):
            out[i] = ids
    for i in set(range(len(texts))) - set(short):
        out[i] = _encode_window(tokenizer, texts[i], max_tokens, keep, add_special_tokens, window)
    cut = [len(ids) > max_tokens for ids in out]
    if max_tokens == 0:
        return [[] for _ in out], cut
    return [ids[-max_tokens:] if keep == "last" else ids[:max_tokens] for ids in out], cut


def _encode_window(tokenizer, text: str, max_tokens: int, keep: str, add_special_tokens: bool,
                   size: int) -> list[int]:
    """Ids of a window of ``text`` at the kept end, grown until it holds more than
    ``max_tokens`` + the margin tokens (or is the whole text)."""
    while True:
        if size >= len(text):
            return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        if keep == "last":
            start = len(text) - size
            space = _SPACE.search(text, start, start + size // 2)
            piece = text[space.start() if space else start:]
        else:
            spaces = [m.start() for m in _SPACE.finditer(text, size // 2, size)]
            piece = text[:spaces[-1] if spaces else size]
        ids = tokenizer(piece, add_special_tokens=add_special_tokens)["input_ids"]
        if len(ids) > max_tokens + _MARGIN:
            # One more token than kept, so the caller still sees that the text was cut.
            return ids
        size *= 4


def _eos_ids(model, tokenizer) -> list[int]:
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("neither the model's generation config nor the tokenizer has an EOS id")
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def response_mask(response_ids: torch.Tensor, eos_ids: Sequence[int], pad_id: int) -> torch.Tensor:
    """[N, R] int64 mask: 1 up to and including the first EOS; for rows without EOS (stopped by
    length or a stop string), 1 up to the last non-pad token."""
    is_eos = torch.isin(response_ids, torch.tensor(list(eos_ids), device=response_ids.device))
    upto_eos = (is_eos.long().cumsum(1) - is_eos.long()) == 0
    pos = torch.arange(response_ids.shape[1], device=response_ids.device)
    last_real = torch.where(response_ids != pad_id, pos, -1).max(dim=1, keepdim=True).values
    upto_last = pos <= last_real
    return torch.where(is_eos.any(1, keepdim=True), upto_eos, upto_last).long()


def engine_for(model, engine: str = "auto", **generate_kwargs) -> str:
    """The engine that :func:`generate` uses: "static" or "hf".

    "auto" picks "static" unless :func:`rlkd_fast.decode.unsupported_reason` names a reason
    (a model that keeps its own cache, a generation config with other logits processors) or
    extra HF ``generate`` arguments are given (``stop_strings``, ...), which only HF honours.

    Raises:
        ValueError: an unknown engine, or "static" for a model or arguments it cannot serve.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "hf":
        return "hf"
    reason = unsupported_reason(model)
    if reason is None and generate_kwargs:
        reason = f"HF generate arguments {sorted(generate_kwargs)} were given"
    if reason is None:
        return "static"
    if engine == "static":
        raise ValueError(f"the static decode loop cannot serve this call: {reason}")
    return "hf"


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    batch_size: int = 32,
    max_prompt_length: int | None = None,
    add_special_tokens: bool = False,
    progress: bool = False,
    on_batch: Callable[[int], object] | None = None,
    engine: str = "auto",
    sampler: str = "multinomial",
    **generate_kwargs,
) -> Rollout:
    """Generate ``num_samples`` responses per prompt.

    Both engines make the same choices (greedy: the same tokens; sampling: the same draws under
    the same seed, up to float rounding of the logits): see :mod:`rlkd_fast.decode`.

    Args:
        model: a causal LM with HF's ``generate`` (put in eval mode for the call).
        tokenizer: its tokenizer; must have a pad token.
        prompts: the prompt texts.
        max_new_tokens: the generation budget per row.
        do_sample: sample (with temperature / top_k / top_p; top_k=0 means no top-k cut) or
            decode greedily (then the ``num_samples`` rows of a prompt are copies).
        temperature: of the sampling, and of the returned log-probs (greedy included).
        num_samples: rows per prompt, consecutive in the output.
        batch_size: rows (prompts x samples) per decode call.
        max_prompt_length: keep only the last this-many prompt tokens (only about as much text
            is tokenized; see :func:`encode_bounded`).
        add_special_tokens: let the tokenizer add its BOS etc. Off by default, as ReFT (and this
            project's SFT) tokenize prompts: the policy must see the prompts it was taught on.
        progress: show a progress bar over batches.
        on_batch: called after each decode call with the number of rows it produced
            (e.g. a caller's progress bar's ``update``).
        engine: "auto" | "static" | "hf" (see :func:`engine_for`).
        sampler: the static engine's draw: "multinomial" (HF's draws under the same seed) or
            "inverse_cdf" (the same distribution, faster on CPU); see :mod:`rlkd_fast.decode`.
        **generate_kwargs: passed on to HF ``generate`` (they select the "hf" engine under
            "auto"), e.g. ``stop_strings``.

    Returns:
        A :class:`Rollout` with rows in prompt order; ``logprobs`` from the static engine only.

    Raises:
        ValueError: bad counts, no prompts, no pad token, or an engine that cannot serve.
    """
    if num_samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("num_samples, batch_size and max_new_tokens must be >= 1")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs a pad token (models.load_tokenizer sets one)")
    if not prompts:
        raise ValueError("no prompts to generate from")
    engine = engine_for(model, engine, **generate_kwargs)
    pad_id, eos_ids = int(tokenizer.pad_token_id), _eos_ids(model, tokenizer)
    # Bounded by max_prompt_length: a huge prompt is not tokenized whole only to be cut.
    encoded, _ = encode_bounded(tokenizer, prompts, max_prompt_length, "last",
                                add_special_tokens)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    per_call = max(1, batch_size // num_samples) if do_sample else batch_size  # greedy: 1 row
    copies = num_samples if do_sample else 1
    run = _static_batch if engine == "static" else _hf_batch
    settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                    top_k=top_k, top_p=top_p, copies=copies, pad_id=pad_id, eos_ids=eos_ids)
    if engine == "static":
        settings["sampler"] = sampler
    if "stop_strings" in generate_kwargs:
        generate_kwargs.setdefault("tokenizer", tokenizer)
    device = model_device(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    # prompt -> (ids, [k, R_b] response, [k, R_b] log-probs)
    pieces: dict[int, tuple[list[int], torch.Tensor, torch.Tensor]] = {}
    try:
        for start in tqdm(range(0, len(order), per_call), disable=not progress,
                          desc="generate", unit="batch"):
            batch = order[start:start + per_call]
            ids, mask = pad_rows([encoded[i] for i in batch], pad_id, "left")
            resp, logp = run(model, ids.to(device), mask.to(device), **settings,
                             **generate_kwargs)
            resp = resp.cpu()
            logp = torch.zeros(resp.shape) if logp is None else logp.cpu()
            if copies != num_samples:
                resp = resp.repeat_interleave(num_samples, dim=0)
                logp = logp.repeat_interleave(num_samples, dim=0)
            for j, i in enumerate(batch):
                rows = slice(j * num_samples, (j + 1) * num_samples)
                pieces[i] = (encoded[i], resp[rows], logp[rows])
            if on_batch is not None:
                on_batch(len(batch) * num_samples)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    roll = _assemble([pieces[i] for i in range(len(encoded))], tokenizer, pad_id, eos_ids)
    if engine == "hf":
        roll.logprobs = None
    return roll


def _static_batch(model, ids, mask, *, copies: int, max_new_tokens: int, do_sample: bool,
                  temperature: float, top_k: int, top_p: float, pad_id: int,
                  eos_ids: list[int], sampler: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses and their log-probs ([B * copies, R] each) from the static decode loop."""
    # copies: the rows HF's num_return_sequences makes, in its order
    out = decode(model, ids, mask, max_new_tokens, eos_ids, pad_id, do_sample=do_sample,
                 temperature=temperature, top_k=top_k, top_p=top_p, copies=copies,
                 sampler=sampler)
    return out.tokens, out.logprobs


def _hf_batch(model, ids, mask, *, copies: int, max_new_tokens: int, do_sample: bool,
              temperature: float, top_k: int, top_p: float, pad_id: int, eos_ids: list[int],
              **generate_kwargs) -> tuple[torch.Tensor, None]:
    """Responses ([B * copies, R]) from HF ``generate``; no log-probs."""
    sample_kwargs = (dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                          num_return_sequences=copies)
                     if do_sample else dict(do_sample=False))
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         pad_token_id=pad_id, eos_token_id=eos_ids, **sample_kwargs,
                         **generate_kwargs)
    return getattr(out, "sequences", out)[:, ids.shape[1]:], None


def _assemble(pieces, tokenizer, pad_id: int, eos_ids: list[int]) -> Rollout:
    """Stack per-prompt pieces into left-padded prompts and right-padded responses."""
    k = pieces[0][1].shape[0]
    prompt_ids, prompt_mask = pad_rows([ids for ids, _, _ in pieces for _ in range(k)], pad_id)
    R = max(max(r.shape[1] for _, r, _ in pieces), 1)
    response_ids = torch.full((len(pieces) * k, R), pad_id, dtype=torch.long)
    logprobs = torch.zeros((len(pieces) * k, R), dtype=torch.float32)
    for p, (_, resp, logp) in enumerate(pieces):
        response_ids[p * k:(p + 1) * k, :resp.shape[1]] = resp
        logprobs[p * k:(p + 1) * k, :logp.shape[1]] = logp
    mask = response_mask(response_ids, eos_ids, pad_id)
    response_ids = response_ids.masked_fill(mask == 0, pad_id)
    logprobs = logprobs.masked_fill(mask == 0, 0.0)
    lengths = mask.sum(1).tolist()
    texts = tokenizer.batch_decode(
        [row[:m] for row, m in zip(response_ids.tolist(), lengths)], skip_special_tokens=True
    )
    prompt_index = torch.arange(len(pieces)).repeat_interleave(k)
    return Rollout(prompt_ids, prompt_mask, response_ids, mask, texts, prompt_index, logprobs)
