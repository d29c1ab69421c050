"""A decode loop over a static KV cache for HF causal LMs, one CUDA graph per step on CUDA.

HF ``generate`` spends most of a small model's decode step in Python: building masks, growing
the cache, running logits processors and stopping criteria. This loop preallocates the KV cache
(``transformers.StaticCache``) and the step's inputs once, then each step writes one token into
fixed buffers and runs the model's forward. On CUDA that one-token forward is captured once in a
CUDA graph and replayed (:class:`DecodeStep`); on CPU the same code runs eagerly, so the tests on
CPU exercise it.

It reproduces HF ``generate``'s choices: greedy picks the argmax of the float32 logits; sampling
applies temperature, then top-k, then top-p (HF's order and cut rules), then draws: with
``sampler="multinomial"`` by ``torch.multinomial`` on the same rows in the same order, so under
the same seed it draws what ``generate`` draws; with ``"inverse_cdf"`` from the same
distribution with one uniform number per row (``torch.multinomial`` draws an exponential number
per vocabulary entry: on CPU that was 17% of a rollout's time). Finished rows get the pad token;
left-padded prompts get positions that count real tokens only. On CPU the one-token steps run
with eager attention (PyTorch's CPU SDPA kernel took 2.5 ms per layer for one query row; the
prefill keeps the model's own), which changes the logits by float rounding only. It also returns
each sampled token's log-prob under the temperature-scaled full softmax (no top-k/top-p cut),
which is what the trainer's old log-probs are.

Models it cannot reproduce (see :func:`unsupported_reason`) go through HF ``generate`` instead.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

#: Generation-config fields whose non-default values add logits processors or stopping rules
#: this loop does not implement; a model whose generation config sets one uses HF ``generate``.
_UNSUPPORTED_GENERATION_FIELDS = (
    "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length",
    "min_new_tokens", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p",
    "sequence_bias", "encoder_repetition_penalty", "exponential_decay_length_penalty",
    "renormalize_logits", "stop_strings", "guidance_scale", "watermarking_config",
)
#: Steps between checks that every row has finished on CUDA (each check waits for the device).
_CUDA_STOP_CHECK_EVERY = 8
#: How :func:`decode` draws a sampled token (see the module docstring).
SAMPLERS = ("multinomial", "inverse_cdf")
#: Cache lengths are rounded up to a multiple of this under CUDA graphs.
_GRAPH_LENGTH_STEP = 64


@dataclass
class Decoded:
    """What :func:`decode` returns for B rows and T generated steps (T <= max_new_tokens).

    Attributes:
        tokens: [B, T] int64; after a row's first EOS, the pad id.
        logprobs: [B, T] float32, log-prob of each token under softmax(logits / temperature)
            over the whole vocabulary; 0 after a row's first EOS.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor


def unsupported_reason(model, generation_config=None) -> str | None:
    """Why the static loop cannot reproduce ``model.generate``, or None when it can.

    It needs a decoder-only model whose forward takes ``cache`` (``past_key_values`` before
    transformers 5.2x), ``position_ids`` and ``attention_mask`` and works with
    ``transformers.StaticCache`` (HF's list of models that
    keep their own cache: xlnet, reformer, rwkv, mamba-style models, ... are out), and a
    generation config with no logits processor beyond temperature / top-k / top-p.
    """
    reason = cache_unsupported_reason(model)
    if reason is not None:
        return reason
    gen = generation_config or getattr(model, "generation_config", None)
    if gen is not None:
        from transformers import GenerationConfig

        default = GenerationConfig()
        for name in _UNSUPPORTED_GENERATION_FIELDS:
            value = getattr(gen, name, None)
            if value is not None and value != getattr(default, name, None):
                return f"its generation config sets {name}={value!r}"
    return None


def cache_unsupported_reason(model) -> str | None:
    """Why ``model``'s forward cannot run over a cache it is handed (see
    :func:`unsupported_reason`), or None when it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "not a decoder-only HF model"
    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    if supports is None or not supports():
        return f"{type(model).__name__} keeps its own cache (no StaticCache support)"
    params = inspect.signature(model.forward).parameters
    missing = [p for p in ("position_ids", "attention_mask") if p not in params]
    if "cache" not in params and "past_key_values" not in params:
        missing.append("cache")
    if missing:
        return f"{type(model).__name__}.forward takes no {', '.join(missing)}"
    return None


def warp_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """HF's sampling warpers in HF's order on float32 logits [B, V]: divide by ``temperature``,
    keep the ``top_k`` largest (0: off; ties at the k-th value are kept), then the smallest set
    whose probability reaches ``top_p`` (1.0: off; at least one token). Cut entries are -inf."""
    scores = logits / temperature if temperature != 1.0 else logits
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - top_p
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def draw(probs: torch.Tensor, sampler: str = "multinomial") -> torch.Tensor:
    """One token id per row of ``probs`` [B, V] (rows sum to 1): ``torch.multinomial`` (HF's
    draw) or the inverse CDF of one uniform number per row (same distribution)."""
    if sampler == "multinomial":
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    # The first entry whose cumulative mass exceeds u; never one of zero probability.
    return (cdf <= u).sum(-1).clamp(max=probs.shape[-1] - 1)


class DecodeStep:
    """One-token forwards over a static KV cache for B rows and ``max_len`` positions.

    The inputs live in fixed buffers (``ids`` [B, 1], ``positions`` [B, 1], ``mask``
    [B, max_len]); :meth:`prefill` writes the prompt into the cache, :meth:`step` runs one token
    and returns the float32 logits [B, V] of the next. With ``cuda_graph`` the step is captured
    once (on its first call) and replayed; the cache's write position is a device tensor that
    the replay advances, so a replay is exactly the eager step. Reused across batches of the
    same shape (:meth:`reset`).
    """

    def __init__(self, model, batch: int, max_len: int, cuda_graph: bool):
        from transformers import StaticCache

        self.model, self.batch, self.max_len = model, batch, max_len
        param = next(model.parameters())
        device = param.device
        try:
            self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        except TypeError:  # transformers before lazily allocated caches
            self.cache = StaticCache(config=model.config, max_batch_size=batch,
                                     max_cache_len=max_len, device=device, dtype=param.dtype)
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        # Older transformers place each write by an explicit cache_position (kept in a buffer
        # that the step advances in place, so a replayed graph sees it move).
        self.cache_position = (torch.zeros(1, dtype=torch.long, device=device)
                               if "cache_position" in params else None)
        # Sliding-window layers track their fill level in a Python int, which a replayed
        # graph would not advance: those models decode eagerly.
        self.cuda_graph = cuda_graph and not any(getattr(self.cache, "is_sliding", [False]))
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.mask = torch.ones(batch, max_len, dtype=torch.long, device=device)
        self.keeps_logits = "logits_to_keep" in params
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # the graph's output buffer

    def reset(self) -> None:
        self.cache.reset()

    def _forward(self, ids, mask, positions, keep_last: bool,
                 cache_position: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"logits_to_keep": 1} if keep_last and self.keeps_logits else {}
        if self.cache_position is not None:
            kwargs["cache_position"] = (self.cache_position if cache_position is None
                                        else cache_position)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, **{self.cache_arg: self.cache}, **kwargs)
        return out.logits[:, -1].float()

    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                copies: int = 1) -> torch.Tensor:
        """Write the left-padded prompts [B / copies, P], each repeated ``copies`` times on
        consecutive rows, into the cache; logits [B, V] of the token after each prompt.
        Positions count real tokens only (as the trainer's forward)."""
        if copies > 1:
            if self._shares_prefill():
                return self._shared_prefill(prompt_ids, prompt_mask, copies)
            prompt_ids = prompt_ids.repeat_interleave(copies, 0)
            prompt_mask = prompt_mask.repeat_interleave(copies, 0)
        width = prompt_ids.shape[1]
        self.mask[:, :width] = prompt_mask
        self.mask[:, width:] = 1  # future columns: the causal mask hides them until written
        positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        self.positions.copy_(prompt_mask.sum(1, keepdim=True))
        cache_position = None
        if self.cache_position is not None:
            self.cache_position.fill_(width)
            cache_position = torch.arange(width, device=prompt_ids.device)
        return self._forward(prompt_ids, self.mask[:, :width], positions, keep_last=True,
                             cache_position=cache_position)

    def _shares_prefill(self) -> bool:
        """Whether each prompt can be prefilled once and its keys/values copied to its rows:
        full-attention layers that place writes themselves (not sliding windows, which keep
        a rolling slice, nor older caches placed by cache_position)."""
        return (self.cache_position is None and self.cache_arg == "cache"
                and not any(getattr(self.cache, "is_sliding", [True])))

    def _shared_prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                        copies: int) -> torch.Tensor:
        """Prefill each distinct prompt once into a plain cache, then write its keys and values
        into its ``copies`` rows of the static cache (what prefilling every row would write)."""
        from transformers import DynamicCache

        width = prompt_ids.shape[1]
        rows_mask = prompt_mask.repeat_interleave(copies, 0)
        self.mask[:, :width] = rows_mask
        self.mask[:, width:] = 1
        self.positions.copy_(rows_mask.sum(1, keepdim=True))
        once = DynamicCache()
        out = self.model(input_ids=prompt_ids, attention_mask=prompt_mask,
                         position_ids=(prompt_mask.cumsum(1) - 1).clamp(min=0),
                         use_cache=True, cache=once,
                         **({"logits_to_keep": 1} if self.keeps_logits else {}))
        for layer, done in zip(self.cache.layers, once.layers, strict=True):
            layer.update(done.keys.repeat_interleave(copies, 0),
                         done.values.repeat_interleave(copies, 0))
        return out.logits[:, -1].float().repeat_interleave(copies, 0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` [B] (one per row) at the next position; logits [B, V] after them."""
        self.ids.copy_(tokens[:, None])
        if not self.cuda_graph:
            logits = self._forward(self.ids, self.mask, self.positions, keep_last=False)
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            logits = self.logits
        self.positions.add_(1)
        if self.cache_position is not None:
            self.cache_position.add_(1)
        return logits

    def _capture(self) -> None:
        """Capture the step in a CUDA graph. The warm-up runs on a side stream (as PyTorch asks)
        and its cache writes are undone, so the capture starts where the eager step would."""
        layers = getattr(self.cache, "layers", None)
        start = (layers[0].cumulative_length.clone()
                 if layers and hasattr(layers[0], "cumulative_length") else None)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._forward(self.ids, self.mask, self.positions, keep_last=False)
        torch.cuda.current_stream().wait_stream(stream)
        self._rewind(start)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward(self.ids, self.mask, self.positions, keep_last=False)
        self._rewind(start)  # capturing ran nothing, but the first replay must not skip a slot

    def _rewind(self, start: torch.Tensor | None) -> None:
        if start is None:  # positions come from cache_position, which the capture leaves
            return
        for layer in self.cache.layers:
            layer.cumulative_length.copy_(start)


# One step object per (model, batch, length, graph) kept between calls: its cache and captured
# graph are reused by every rollout batch of the same shape.
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decode_step(model, batch: int, max_len: int, cuda_graph: bool) -> DecodeStep:
    steps = _STEPS.setdefault(model, {})
    key = (batch, max_len, cuda_graph)
    if key not in steps:
        steps.clear()  # one shape at a time: caches are large on a GPU
        steps[key] = DecodeStep(model, batch, max_len, cuda_graph)
    step = steps[key]
    step.reset()
    return step


@torch.no_grad()
def decode(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    cuda_graph: bool | None = None,
    copies: int = 1,
    sampler: str = "multinomial",
) -> Decoded:
    """Generate up to ``max_new_tokens`` tokens after each left-padded prompt.

    Args:
        model: a HF causal LM in eval mode that :func:`unsupported_reason` accepts.
        prompt_ids: [B, P] int64 on the model's device, left padded.
        prompt_mask: [B, P] int64, 1 on real tokens.
        max_new_tokens: the step budget; the loop stops early once every row has emitted an EOS.
        eos_ids: token ids that end a row.
        pad_id: what finished rows get.
        do_sample: sample (``temperature`` > 0, ``top_k`` (0: off), ``top_p``) with the global
            torch RNG, or take the argmax.
        temperature: also the temperature of the returned log-probs (greedy included).
        cuda_graph: replay a captured CUDA graph for each step (default: on CUDA).
        copies: rows per prompt (consecutive; e.g. GRPO's samples of a question): each prompt
            is prefilled once where the cache allows it.
        sampler: "multinomial" (HF's draws under the same seed) or "inverse_cdf" (faster).

    Returns:
        :class:`Decoded` with ``len(prompt_ids) * copies`` rows.

    Raises:
        ValueError: a non-positive temperature or budget, top_p outside (0, 1], an unknown
            sampler.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if max_new_tokens < 1 or not temperature > 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need max_new_tokens >= 1, temperature > 0, 0 < top_p <= 1, "
                         f"top_k >= 0; got {max_new_tokens}, {temperature}, {top_p}, {top_k}")
    device = prompt_ids.device
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    batch, width = prompt_ids.shape[0] * copies, prompt_ids.shape[1]
    max_len = width + max_new_tokens
    if cuda_graph:  # batches of other prompt widths then reuse the captured graph
        max_len = -(-max_len // _GRAPH_LENGTH_STEP) * _GRAPH_LENGTH_STEP
    step = _decode_step(model, batch, max_len, cuda_graph)
    eos = torch.tensor(list(eos_ids), device=device)
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # steps each row was alive
    logits = step.prefill(prompt_ids, prompt_mask, copies)
    with _eager_attention(model, device.type == "cpu"):
        return _loop(step, logits, tokens, logprobs, unfinished, lengths, eos, pad_id,
                     max_new_tokens, do_sample, temperature, top_k, top_p, sampler)


def _loop(step, logits, tokens, logprobs, unfinished, lengths, eos, pad_id, max_new_tokens,
          do_sample, temperature, top_k, top_p, sampler) -> Decoded:
    """The token loop of :func:`decode` (its arguments and buffers)."""
    check_every = _CUDA_STOP_CHECK_EVERY if tokens.device.type == "cuda" else 1
    for t in range(max_new_tokens):
        if do_sample:
            probs = warp_logits(logits, temperature, top_k, top_p).softmax(-1)
            chosen = draw(probs, sampler)
        else:
            chosen = logits.argmax(-1)
        chosen = torch.where(unfinished, chosen, pad_id)
        scaled = logits / temperature if temperature != 1.0 else logits
        logp = scaled.log_softmax(-1).gather(1, chosen[:, None]).squeeze(1)
        tokens[:, t] = chosen
        logprobs[:, t] = torch.where(unfinished, logp, 0.0)
        lengths += unfinished
        unfinished &= ~torch.isin(chosen, eos)
        if t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and not bool(unfinished.any())):
            break
        logits = step.step(chosen)
    # On CUDA the last few steps may have run after every row finished: they are cut off.
    done = int(lengths.max())
    return Decoded(tokens[:, :done], logprobs[:, :done])


@contextmanager
def _eager_attention(model, wanted: bool):
    """Run the block with eager attention where the model uses SDPA and allows switching."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    can_switch = getattr(type(model), "_can_set_attn_implementation", None)
    switch = wanted and before == "sdpa" and can_switch is not None and can_switch()
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)
