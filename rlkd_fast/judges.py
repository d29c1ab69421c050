"""Judges: models that score (question, program) pairs without a gold answer.

Every judge has ``score(questions, programs) -> JudgeScores`` (reward [N] fp32 on the CPU plus
named extras). The trainer does not mix judges' rewards: each judge's reward trains its own loss
term, and the losses are mixed by coefficient (``docs/method.md``). :class:`MixedJudge` sums
rewards instead, for code that wants one reward from several judges.

- :class:`YoNJudge`: an LLM judge's single-token Yes/No verdict (paper Eq. 2). It runs the model
  trunk only and turns the last position's hidden state into the reward with the fused
  ``yon_reward_from_hidden`` kernel, which reads just the Yes/No rows of the LM head (and, for
  the Yes+No mass, streams the vocabulary once): the full [B, V] logits are never built.
  Prompts are batched by a token budget, and the K prompts of one question (a GRPO group) have
  their common token prefix prefilled once, its keys and values reused by each continuation.
- :class:`RerankJudge`: a 2-label sequence classifier (ReFT's reranker); reward = softmax[1].
- :class:`LogLikelihoodScorer`: the paper's "LL" baseline, the judge's average token
  log-likelihood of the program given the question.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rlkd_fast.kernels.yon_reward import yon_reward, yon_reward_from_hidden
from rlkd_fast.models import (
    fusable_trunk,
    load_causal_lm,
    load_sequence_classifier,
    model_device,
    output_head,
)
from rlkd_fast.prompts import (
    DEFAULT_JUDGE_TEMPLATE,
    RERANK_TEMPLATE,
    count_program_lines,
    judge_prompt,
)
from rlkd_fast.rollout import encode_bounded, pad_rows

# The judge's context for the LL baseline: the judge template's part before the program.
LL_TEMPLATE = "Question: {question}\nProposed solution:\n{program}"


@dataclass
class JudgeScores:
    """reward: [N] float32 on the CPU; extras: named [N] tensors (e.g. ``mass``, ``short``)."""

    reward: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Judge:
    """Scores (question, program) pairs. Subclasses implement :meth:`score`."""

    name = "judge"

    def score(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        """Score N pairs; ``questions`` are strings or objects with a ``.question`` field
        (e.g. ``rlkd_fast.data.Problem``)."""
        raise NotImplementedError

    def __call__(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        return self.score(questions, programs)


class MixedJudge(Judge):
    """``sum_i coef_i * reward_i`` over judges; each judge's reward and extras are kept in the
    extras under ``"<name>/reward"`` and ``"<name>/<key>"``."""

    name = "mixed"

    def __init__(self, judges: Sequence[tuple[float, Judge]]):
        if not judges:
            raise ValueError("MixedJudge needs at least one (coefficient, judge) pair")
        names = [j.name for _, j in judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judge names must be distinct to keep their extras apart: {names}")
        self.judges = [(float(c), j) for c, j in judges]

    def score(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        total = torch.zeros(len(programs), dtype=torch.float32)
        extras: dict[str, torch.Tensor] = {}
        for coef, judge in self.judges:
            if coef == 0:
                continue
            s = judge.score(questions, programs)
            total += coef * s.reward
            extras[f"{judge.name}/reward"] = s.reward
            extras.update({f"{judge.name}/{k}": v for k, v in s.extras.items()})
        return JudgeScores(total, extras)


def _question_text(q) -> str:
    return q if isinstance(q, str) else q.question


def _check_pairs(questions: Sequence, programs: Sequence[str]) -> list[str]:
    if len(questions) != len(programs):
        raise ValueError(f"{len(questions)} questions but {len(programs)} programs")
    return [_question_text(q) for q in questions]


def _batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices in batches of similar length, longest first (so memory peaks show up early).

    A batch holds at most ``batch_size`` rows and, when ``max_tokens`` is given, at most
    ``max_tokens`` padded tokens (rows x its longest row): short rows then share a forward
    pass many at a time, long ones few, and no batch pads a short row to a long one's length
    because a row count was fixed. A row longer than ``max_tokens`` goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        # Sorted longest first: the batch's first row sets its padded width.
        width = lengths[batch[0]] if batch else lengths[i]
        full = len(batch) >= batch_size or (
            max_tokens is not None and (len(batch) + 1) * width > max_tokens)
        if batch and full:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _check_budget(batch_size: int, max_batch_tokens: int | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")


#: Default padded tokens per forward pass. A few thousand tokens already make the large matrix
#: products of a billion-parameter judge efficient; larger batches of length-sorted rows only pad
#: more (at the issue-13 shape, 8k pads ~2x as many tokens as 4k).
MAX_BATCH_TOKENS = 4096
#: A group's common prefix shorter than this is scored with each row: a separate forward and a
#: copy of its keys and values per row would cost about what they save.
MIN_SHARED_PREFIX = 8


@dataclass
class _Group:
    """Prompts of one question whose first ``prefix`` tokens are the same; every row keeps at
    least one token of its own, so its last position is computed after the prefix."""

    rows: list[int]
    prefix: int


def _prefix_groups(
    keys: Sequence[str], ids: list[list[int]], min_prefix: int = MIN_SHARED_PREFIX
) -> tuple[list[_Group], list[int]]:
    """Rows of the same key (question) that share at least ``min_prefix`` leading tokens, and
    the other rows. The prefix is the group's longest common token prefix (template, question,
    the program header the samples share), found on the tokens, so it holds for any template,
    chat template or tokenizer."""
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups, alone = [], []
    for rows in by_key.values():
        common = _common_prefix([ids[i] for i in rows])
        prefix = min(common, min(len(ids[i]) for i in rows) - 1)
        if len(rows) > 1 and prefix >= min_prefix:
            groups.append(_Group(rows, prefix))
        else:
            alone.extend(rows)
    return groups, alone


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest token prefix every row starts with."""
    first, n = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return n


def _shares_cache_rows(model) -> bool:
    """Whether every layer of ``model`` keeps a plain (full-attention) key/value cache, whose
    rows can be copied to other rows as they are. Sliding-window and recurrent layers keep
    state whose masking after a copy the library does not check, so they are not shared."""
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config the cache cannot read: do not share
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def _select_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache whose row ``j`` is ``cache``'s row ``rows[j]`` (the prefix of each
    continuation); ``cache`` itself is left as it is, for the next batch."""
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), i)
    return out


def _cache_kwarg(module) -> str:
    """The name a forward takes its KV cache by (``cache`` in newer transformers)."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _hidden_states(
    trunk,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor | None = None,
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """[B, L, H] last hidden states of ``ids`` [B, L].

    Without ``cache``, ``mask`` is [B, L] and positions count real tokens only, so a
    left-padded row is scored exactly as it would be alone. With ``cache`` (a prefix's keys and
    values, extended in place), ``mask`` is [B, prefix + L] and ``positions`` [B, L] continue
    after each row's real prefix tokens.
    """
    if positions is None:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kw = {} if cache is None else {_cache_kwarg(trunk): cache}
    try:
        out = trunk(input_ids=ids, attention_mask=mask, position_ids=positions,
                    use_cache=cache is not None, **kw)
    except TypeError:  # trunks that derive positions from the mask themselves
        out = trunk(input_ids=ids, attention_mask=mask, use_cache=cache is not None, **kw)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def resolve_token_ids(
    tokenizer, words: Sequence[str | int], ignore_case: bool = True
) -> list[int]:
    """Ids of every single token that spells one of ``words``: every vocabulary entry whose
    decoded text, stripped of surrounding whitespace, is the word.

    That takes in the bare form and each leading-space form a vocabulary has ("Yes", byte-level
    "ĠYes", SentencePiece "▁Yes"). The bare form matters after a chat prompt that ends in a
    newline, where a judge writes "Yes" without a space; SentencePiece tokenizers encode both
    "Yes" and " Yes" as "▁Yes", so encoding the word would never find it. Whole words only
    ("Yesterday" never counts), special tokens never count.

    With ``ignore_case`` (the default) "yes" and "YES" count for "Yes": a judge that answers in
    another case has still answered, and a side's probability then holds all of it. Pass
    ``ignore_case=False`` for answer words whose case carries meaning.

    Args:
        tokenizer: an HF tokenizer.
        words: answer words, or token ids (taken as they are).
        ignore_case: compare case-insensitively.

    Returns:
        The ids in the order found (words in order, then vocabulary order), without repeats.

    Raises:
        ValueError: an empty word, an id outside the vocabulary, or a word that no single token
            spells (naming the tokens the tokenizer splits it into).
    """
    fold = str.casefold if ignore_case else (lambda text: text)
    spelled: dict[str, list[int]] | None = None
    ids: list[int] = []
    for word in words:
        if isinstance(word, int):
            if not 0 <= word < len(tokenizer):
                raise ValueError(f"token id {word} is outside the vocabulary (size "
                                 f"{len(tokenizer)})")
            found = [word]
        else:
            if not word.strip():
                raise ValueError("judge answer words must not be empty")
            if spelled is None:  # one pass over the vocabulary serves every word
                spelled = _single_token_spellings(tokenizer, fold)
            found = spelled.get(fold(word.strip()), [])
            if not found:
                pieces = tokenizer.encode(word.strip(), add_special_tokens=False)
                shown = tokenizer.convert_ids_to_tokens(pieces)
                raise ValueError(
                    f"no single token of the judge's tokenizer spells {word.strip()!r} (it "
                    f"splits it as {len(pieces)} tokens {shown}); the YoN reward reads one "
                    "next-token logit per answer word, so pick words that are single tokens "
                    "in this vocabulary or pass their token ids")
        ids.extend(i for i in found if i not in ids)
    return ids


def _single_token_spellings(tokenizer, fold) -> dict[str, list[int]]:
    """``{folded stripped text: [ids]}`` over the whole vocabulary, special tokens left out."""
    n = len(tokenizer)
    rows = [[i] for i in range(n)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust decoder: ~5x faster than batch_decode on 150k entries
        texts = backend.decode_batch(rows, skip_special_tokens=False)
    else:
        texts = tokenizer.batch_decode(rows, skip_special_tokens=False)
    special = set(tokenizer.all_special_ids)
    out: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        key = fold(text.strip())
        if key and i not in special:
            out.setdefault(key, []).append(i)
    return out


class YoNJudge(Judge):
    """An LLM judge's Yes/No reward: s = sigmoid((z_Yes - z_No) / tau), r = s if s >= delta
    else 0 (paper Eq. 2), read at the last position of the judge prompt.

    Args:
        model: a causal LM (HF), on its own device if wanted.
        tokenizer: its tokenizer.
        template: judge prompt with ``{question}`` and ``{program}``; chat tokenizers get their
            chat template with thinking disabled (``chat`` forces or skips it).
        yes, no: answer words (or token ids) per side; every single token that spells a word
            counts, bare or with a leading space, in any case (:func:`resolve_token_ids`); a
            side's logits combine by logsumexp.
        tau, delta: temperature and threshold of Eq. 2.
        min_lines: programs with fewer statement lines get reward 0 without being judged
            (anti-hacking, App. B.3).
        batch_size: at most this many prompts per forward pass (sorted by length).
        max_batch_tokens: at most this many padded tokens (rows x longest row) per forward
            pass; None: ``batch_size`` rows whatever their length.
        max_length: longer prompts keep their last ``max_length`` tokens (the question and the
            verdict request stay nearest the answer); counted in ``extras["truncated"]``.
        device: move the model there (default: where it is).
        with_mass: also return P(Yes) + P(No) (a full-vocabulary log-sum-exp, still fused).
        share_prefix: prompts of the same question (a GRPO group's K programs) that share at
            least :data:`MIN_SHARED_PREFIX` leading tokens have that prefix (template, question,
            the program's common opening) prefilled once; each continuation reads its keys and
            values from the cache. The rewards are those of the unshared path up to
            floating-point summation order. Models with sliding-window or recurrent layers are
            scored unshared.
    """

    name = "yon"

    def __init__(
        self,
        model,
        tokenizer,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        yes: Sequence[str | int] = ("Yes",),
        no: Sequence[str | int] = ("No",),
        tau: float = 1.0,
        delta: float = 0.5,
        min_lines: int = 0,
        batch_size: int = 16,
        max_length: int = 2048,
        device: str | torch.device | None = None,
        chat: bool | None = None,
        with_mass: bool = True,
        max_batch_tokens: int | None = MAX_BATCH_TOKENS,
        share_prefix: bool = True,
    ):
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        _check_budget(batch_size, max_batch_tokens)
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.template, self.chat = template, chat
        self.yes_ids = resolve_token_ids(tokenizer, yes)
        self.no_ids = resolve_token_ids(tokenizer, no)
        both = set(self.yes_ids) & set(self.no_ids)
        if both:
            raise ValueError(f"token ids {sorted(both)} spell both a Yes and a No word")
        self.tau, self.delta, self.min_lines = float(tau), float(delta), int(min_lines)
        self.batch_size, self.max_length, self.with_mass = batch_size, max_length, with_mass
        self.max_batch_tokens = max_batch_tokens
        # None: the model does more than a matmul after its trunk (Gemma-2's soft-capping),
        # so the reward is read from its own last-position logits instead of the fused kernel.
        self._trunk = fusable_trunk(self.model)
        self.share_prefix = share_prefix and _shares_cache_rows(self.model)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> YoNJudge:
        """Load the judge from a hub id or a local dir (bf16 on GPU, fp32 on CPU)."""
        model, tokenizer = load_causal_lm(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    def prompts(self, questions: Sequence, programs: Sequence[str]) -> list[str]:
        """The judge prompts for the pairs (chat template applied where it applies)."""
        qs = _check_pairs(questions, programs)
        return [judge_prompt(q, p, self.template, self.tokenizer, self.chat)
                for q, p in zip(qs, programs)]

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        # A rendered chat template carries its own BOS.
        chat = self.chat if self.chat is not None else bool(
            getattr(self.tokenizer, "chat_template", None))
        # Bounded: only about max_length tokens' worth of each prompt's end is tokenized.
        return encode_bounded(self.tokenizer, texts, self.max_length, "last",
                              add_special_tokens=not chat)

    @torch.no_grad()
    def score(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        """Rewards [N] fp32 and extras ``mass`` (P(Yes)+P(No), 0 where not judged), ``short``
        (below ``min_lines``), ``truncated``; all on the CPU.

        Raises:
            ValueError: ``questions`` and ``programs`` differ in length.
        """
        n = len(programs)
        qs = _check_pairs(questions, programs)
        prompts = self.prompts(qs, programs)
        short = torch.tensor([count_program_lines(p) < self.min_lines for p in programs],
                             dtype=torch.bool)
        todo = [i for i in range(n) if not short[i]]
        ids, truncated = self._encode([prompts[i] for i in todo])
        reward = torch.zeros(n, dtype=torch.float32)
        mass = torch.zeros(n, dtype=torch.float32)
        for batch, r, m in self._score_rows([qs[i] for i in todo], ids):
            rows = torch.tensor([todo[j] for j in batch])
            reward[rows] = r
            if m is not None:
                mass[rows] = m
        was_truncated = torch.zeros(n, dtype=torch.bool)
        was_truncated[torch.tensor(todo, dtype=torch.long)] = torch.tensor(truncated,
                                                                           dtype=torch.bool)
        extras = {"short": short, "truncated": was_truncated}
        if self.with_mass:
            extras["mass"] = mass
        return JudgeScores(reward, extras)

    def _score_rows(self, keys: list[str], ids: list[list[int]]) -> Iterator[tuple]:
        """``(indices into ids, reward, mass)`` per forward pass, over every row once."""
        groups, alone = (_prefix_groups(keys, ids) if self.share_prefix
                         else ([], list(range(len(ids)))))
        for batch in _batches([len(ids[j]) for j in alone], self.batch_size,
                              self.max_batch_tokens):
            rows = [alone[b] for b in batch]
            yield (rows, *self._score_batch([ids[j] for j in rows]))
        # Groups with prefixes of similar length share a prefill (left padded); their
        # continuations are then batched by length across the groups, not group by group,
        # so a short program is not padded to its group's longest.
        for wave in _batches([g.prefix for g in groups], self.batch_size, self.max_batch_tokens):
            yield from self._score_shared(ids, [groups[w] for w in wave])

    def _score_batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rewards of whole prompts, left padded: every row's last position is the last."""
        device = model_device(self.model)
        ids, mask = (t.to(device) for t in pad_rows(rows, self.tokenizer.pad_token_id, "left"))
        last = torch.full((len(rows),), ids.shape[1] - 1, device=device)
        return self._reward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), last)

    def _score_shared(self, ids: list[list[int]], groups: list[_Group]) -> Iterator[tuple]:
        """Prefill the groups' prefixes once, then score every continuation against a copy of
        its group's cache rows: right padded, positions continuing after the prefix."""
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id
        heads = [ids[g.rows[0]][:g.prefix] for g in groups]
        prefix_ids, prefix_mask = (t.to(device) for t in pad_rows(heads, pad, "left"))
        cache = DynamicCache()
        self._forward(prefix_ids, prefix_mask, (prefix_mask.cumsum(-1) - 1).clamp(min=0),
                      cache, keep=torch.tensor([prefix_ids.shape[1] - 1], device=device))
        prefix_len = prefix_mask.sum(1)
        conts = [(k, j) for k, g in enumerate(groups) for j in g.rows]
        lengths = [len(ids[j]) - groups[k].prefix for k, j in conts]
        for batch in _batches(lengths, self.batch_size, self.max_batch_tokens):
            owners = [conts[b][0] for b in batch]
            rows = [conts[b][1] for b in batch]
            tails = [ids[j][groups[k].prefix:] for k, j in zip(owners, rows)]
            x, tail_mask = (t.to(device) for t in pad_rows(tails, pad, "right"))
            owner = torch.tensor(owners, device=device)
            mask = torch.cat([prefix_mask[owner], tail_mask], dim=1)
            positions = prefix_len[owner, None] + torch.arange(x.shape[1], device=device)
            last = tail_mask.sum(1) - 1
            yield (rows, *self._reward(x, mask, positions, last, _select_rows(cache, owner)))

    def _forward(self, ids, mask, positions, cache, keep: torch.Tensor):
        """The trunk's hidden states [B, L, H] (fusable head) or the model's logits at the
        positions ``keep`` [B, len(keep), V] (a head the kernel cannot fuse)."""
        if self._trunk is not None:
            return _hidden_states(self._trunk, ids, mask, positions, cache)
        kw = {} if cache is None else {_cache_kwarg(self.model): cache}
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=cache is not None, logits_to_keep=keep, **kw).logits

    def _reward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        last: torch.Tensor,
        cache: DynamicCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reward and mass [B] (CPU fp32) read at each row's position ``last`` [B] of ``ids``."""
        yes, no = self.yes_ids, self.no_ids  # plain lists: the kernel caches them per device
        rows = torch.arange(len(last), device=last.device)
        keep = torch.unique(last)  # sorted; only these positions' logits are built
        out = self._forward(ids, mask, positions, cache, keep)
        if self._trunk is None:
            logits = out[rows, torch.searchsorted(keep, last)]
            r, m = yon_reward(logits, yes, no, tau=self.tau, delta=self.delta,
                              with_mass=self.with_mass)
        else:
            head = output_head(self.model)
            r, m = yon_reward_from_hidden(
                out[rows, last], head.weight, yes, no, tau=self.tau, delta=self.delta,
                bias=getattr(head, "bias", None), with_mass=self.with_mass,
            )
        return r.float().cpu(), (m.float().cpu() if m is not None and self.with_mass else None)


class RerankJudge(Judge):
    """A 2-label sequence classifier's probability that the program is right (ReFT reranker).

    Input: ``"Question:\\n{q}\\nAnswer reasoning:\\n{program}"`` without special tokens, as
    ReFT's reranker was trained; reward = softmax(logits)[1]. Rows are right padded: the
    classifier reads the last non-pad token. Batches are sorted by length and hold at most
    ``batch_size`` rows and ``max_batch_tokens`` padded tokens (None: no token limit).
    """

    name = "rerank"

    def __init__(
        self,
        model,
        tokenizer,
        template: str = RERANK_TEMPLATE,
        batch_size: int = 16,
        max_length: int = 1024,
        device: str | torch.device | None = None,
        max_batch_tokens: int | None = MAX_BATCH_TOKENS,
    ):
        _check_budget(batch_size, max_batch_tokens)
        labels = getattr(model.config, "num_labels", None)
        if labels != 2:
            raise ValueError(f"the reranker must be a 2-label classifier, got num_labels={labels}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the reranker's tokenizer needs a pad token")
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer, self.template = tokenizer, template
        self.batch_size, self.max_length = batch_size, max_length
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> RerankJudge:
        model, tokenizer = load_sequence_classifier(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    @torch.no_grad()
    def score(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        qs = _check_pairs(questions, programs)
        texts = [self.template.replace("{question}", q.strip()).replace("{program}", p)
                 for q, p in zip(qs, programs)]
        # As ReFT trained it: no special tokens, and long inputs lose the program's tail.
        ids, _ = encode_bounded(self.tokenizer, texts, self.max_length, "first")
        reward = torch.zeros(len(texts), dtype=torch.float32)
        device = model_device(self.model)
        for batch in _batches([len(r) for r in ids], self.batch_size, self.max_batch_tokens):
            x, mask = pad_rows([ids[j] for j in batch], self.tokenizer.pad_token_id, "right")
            logits = self.model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
            reward[torch.tensor(batch)] = logits.float().softmax(-1)[:, 1].cpu()
        return JudgeScores(reward)


class LogLikelihoodScorer(Judge):
    """The "LL" baseline: the judge model's mean log-probability of the program's tokens,
    given ``template``'s text before ``{program}`` (default: the judge prompt's opening).

    Log-probabilities are computed from the response positions' hidden states only, in fp32,
    in chunks of rows, so memory stays at ``chunk x V``. Programs with no tokens score -inf.
    Batches are sorted by length and hold at most ``batch_size`` rows and ``max_batch_tokens``
    padded tokens (None: no token limit). With ``share_prefix``, the programs of one question
    have their common token prefix (the context and the programs' shared opening) prefilled
    once, as :class:`YoNJudge` does; response tokens inside that prefix are scored from it.
    """

    name = "ll"

    def __init__(
        self,
        model,
        tokenizer,
        template: str = LL_TEMPLATE,
        batch_size: int = 8,
        max_length: int = 2048,
        device: str | torch.device | None = None,
        chunk: int = 256,
        max_batch_tokens: int | None = MAX_BATCH_TOKENS,
        share_prefix: bool = True,
    ):
        _check_budget(batch_size, max_batch_tokens)
        if not template.endswith("{program}"):
            raise ValueError("the LL template must end with {program} (the scored response)")
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer, self.template = tokenizer, template
        self.batch_size, self.max_length, self.chunk = batch_size, max_length, chunk
        self.max_batch_tokens = max_batch_tokens
        self._trunk = fusable_trunk(self.model)  # None: log-probs from the model's own logits
        self.share_prefix = share_prefix and _shares_cache_rows(self.model)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> LogLikelihoodScorer:
        model, tokenizer = load_causal_lm(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    def _encode(self, question: str, program: str) -> tuple[list[int], int]:
        """(context + response ids, number of response ids), cut to ``max_length``."""
        context = self.template[: -len("{program}")].replace("{question}", question)
        # Bounded: neither part is tokenized beyond what the max_length cut keeps.
        (ctx,), _ = encode_bounded(self.tokenizer, [context], self.max_length, "first", True)
        (resp,), _ = encode_bounded(self.tokenizer, [program], self.max_length, "first")
        ids = (ctx + resp)[: self.max_length]
        return ids, max(0, len(ids) - len(ctx))

    @torch.no_grad()
    def score(self, questions: Sequence, programs: Sequence[str]) -> JudgeScores:
        qs = _check_pairs(questions, programs)
        encoded = [self._encode(q, p) for q, p in zip(qs, programs)]
        reward = torch.full((len(encoded),), float("-inf"), dtype=torch.float32)
        ids = [e[0] for e in encoded]
        groups, alone = (_prefix_groups(qs, ids) if self.share_prefix
                         else ([], list(range(len(ids)))))
        for batch in _batches([len(ids[j]) for j in alone], self.batch_size,
                              self.max_batch_tokens):
            rows = [alone[b] for b in batch]
            reward[torch.tensor(rows)] = self._mean_logprob([encoded[j] for j in rows])
        for wave in _batches([g.prefix for g in groups], self.batch_size, self.max_batch_tokens):
            for rows, mean in self._shared_logprob(encoded, [groups[w] for w in wave]):
                reward[torch.tensor(rows)] = mean
        tokens = torch.tensor([e[1] for e in encoded], dtype=torch.long)
        return JudgeScores(reward, {"tokens": tokens})

    def _states(self, ids, mask, positions, cache) -> torch.Tensor:
        """[B, L, H] trunk hidden states (fusable head) or [B, L, V] logits."""
        if self._trunk is not None:
            return _hidden_states(self._trunk, ids, mask, positions, cache)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=True, **{_cache_kwarg(self.model): cache}).logits

    def _shared_logprob(
        self, encoded: list[tuple[list[int], int]], groups: list[_Group]
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(rows, mean log-prob [B])`` per continuation batch of the groups: the prefixes
        prefilled once (left padded), each continuation against a copy of its group's cache."""
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id
        heads = [encoded[g.rows[0]][0][:g.prefix] for g in groups]
        prefix_ids, prefix_mask = (t.to(device) for t in pad_rows(heads, pad, "left"))
        cache = DynamicCache()
        prefix_states = self._states(prefix_ids, prefix_mask,
                                     (prefix_mask.cumsum(-1) - 1).clamp(min=0), cache)
        width, prefix_len = prefix_ids.shape[1], prefix_mask.sum(1)
        conts = [(k, j) for k, g in enumerate(groups) for j in g.rows]
        lengths = [len(encoded[j][0]) - groups[k].prefix for k, j in conts]
        for batch in _batches(lengths, self.batch_size, self.max_batch_tokens):
            owners, rows = [conts[b][0] for b in batch], [conts[b][1] for b in batch]
            tails = [encoded[j][0][groups[k].prefix:] for k, j in zip(owners, rows)]
            x, tail_mask = (t.to(device) for t in pad_rows(tails, pad, "right"))
            owner = torch.tensor(owners, device=device)
            mask = torch.cat([prefix_mask[owner], tail_mask], dim=1)
            positions = prefix_len[owner, None] + torch.arange(x.shape[1], device=device)
            states = self._states(x, mask, positions, _select_rows(cache, owner))
            # Token t is predicted by position t - 1: inside the prefix (at its left-padded
            # place in the group's prefill) or in the continuation.
            picks: dict[int, list[list[int]]] = {0: [[], [], [], []], 1: [[], [], [], []]}
            for i, (k, j) in enumerate(zip(owners, rows)):
                ids, n_resp = encoded[j]
                prefix = groups[k].prefix
                for t in range(max(1, len(ids) - n_resp), len(ids)):
                    inside = t <= prefix
                    b, position = (k, width - prefix + t - 1) if inside else (i, t - 1 - prefix)
                    for column, value in zip(picks[inside], (b, position, ids[t], i)):
                        column.append(value)
            yield rows, self._means([(states, picks[0]), (prefix_states, picks[1])], len(rows))

    def _means(self, sources: list[tuple[torch.Tensor, list[list[int]]]],
               n_rows: int) -> torch.Tensor:
        """Mean log-prob per row [n_rows] (CPU fp32, -inf for rows without tokens). Each source
        is (states [B, L, H or V], [batch indices, positions, target ids, row of each])."""
        device = model_device(self.model)
        sums = torch.zeros(n_rows, dtype=torch.float32, device=device)
        counts = torch.zeros(n_rows, dtype=torch.long, device=device)
        for states, columns in sources:
            if not columns[0]:
                continue
            b, position, tgt, row = (torch.tensor(c, device=device) for c in columns)
            vectors = states[b, position]
            if self._trunk is None:
                logits = vectors.float()
                token_lp = logits.gather(-1, tgt[:, None])[:, 0] - logits.logsumexp(-1)
            else:
                token_lp = self._token_logprobs(vectors, tgt)
            sums.index_add_(0, row, token_lp)
            counts.index_add_(0, row, torch.ones_like(row))
        mean = sums / counts.clamp(min=1)
        return torch.where(counts > 0, mean, float("-inf")).cpu()

    def _mean_logprob(self, rows: list[tuple[list[int], int]]) -> torch.Tensor:
        device = model_device(self.model)
        ids, mask = pad_rows([r[0] for r in rows], self.tokenizer.pad_token_id, "right")
        ids, mask = ids.to(device), mask.to(device)
        # Position t predicts token t + 1: targets are the last n_resp tokens of each row.
        target = torch.zeros_like(mask, dtype=torch.bool)
        for i, (r, n_resp) in enumerate(rows):
            target[i, max(1, len(r) - n_resp):len(r)] = True  # token 0 has no predictor
        predict = torch.cat([target[:, 1:], torch.zeros_like(target[:, :1])], dim=1)
        trunk = self._trunk
        if trunk is None:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            flat = logits[predict].float().log_softmax(-1)
            token_lp = flat.gather(-1, ids[target][:, None])[:, 0]
        else:
            hidden = _hidden_states(trunk, ids, mask)[predict]
            token_lp = self._token_logprobs(hidden, ids[target])
        counts = target.sum(1)
        sums = torch.zeros(len(rows), device=device, dtype=torch.float32)
        sums.index_add_(0, target.nonzero()[:, 0], token_lp)
        mean = sums / counts.clamp(min=1)
        return torch.where(counts > 0, mean, float("-inf")).cpu()

    def _token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[M] fp32 log p(target) from [M, H] hidden states, ``chunk`` rows at a time."""
        head = output_head(self.model)
        out = []
        for start in range(0, hidden.shape[0], self.chunk):
            logits = head(hidden[start:start + self.chunk]).float()
            tgt = targets[start:start + self.chunk, None]
            out.append(logits.gather(-1, tgt)[:, 0] - logits.logsumexp(-1))
        return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)
