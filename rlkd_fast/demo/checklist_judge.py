"""The embedded judge: a tiny Llama whose weights are set by construction, not taught.

A judge LLM reading a word problem's program asks, among other things, questions that the
student's mistakes almost always fail: *is every number the program types one the question
gives? is every name it reads one it defined? does it return? does it use every number the
question gives?* On a warm-up student's own samples, 97% of the wrong programs fail one (a
miscopied number, a name never defined, a step left out) while 98% of the right ones pass all
four. A tiny judge taught by gradient descent on a CPU did not learn the comparisons behind them
(``docs/method.md``, "The embedded judge"), so this module writes them into the weights of a
three-layer Llama, the way trained models' duplicate-token and previous-token heads do it. It
stays an ordinary causal LM: the reward is read from its Yes/No logits at the answer slot like
any judge's; it never runs the program and never sees the answer.

The circuit (every head reads one feature; ``docs/method.md`` has the full account):

* **tokens**: a word-level tokenizer with ``<bos>`` first; every number and name is one token
  with a code (its index's decimal digits, one-hot), so "same token" is a dot product of codes.
  Numbers above :data:`MAX_NUMBER` and words it never saw are all ``<unk>``.
* **layer 1**: attention finds the *region* (the share of ``\"\"\"`` among them and ``<bos>``:
  the body starts after the docstring's second), whether the *previous token is a newline*
  (RoPE relative position: a name at a line start is assigned, elsewhere read) and whether the
  token is a *first occurrence* (attention split evenly over ``<bos>`` and the token's copies
  so far: 1/2 when there are none); the MLP thresholds them.
* **layer 2**: the same count over copies in the body only; the MLP marks a token *bad* (a number
  first seen in the body, other than the constants gold programs use unstated such as the 2 of
  "half"; a name read in the body before anything defined it), ``return`` in the body, the
  numbers stated before the body (question and docstring), and the first use in the body of
  each.
* **layer 3**, read at the answer slot: any bad token, any return, (distinct numbers used -
  distinct numbers stated) / (their count + 1), negative when one is left out, and whether
  ``<bos>`` is there (a prompt cut at the front for length cannot be checked and fails).
* **head**: Yes - No = +4 when all checks pass, -4 when one fails, lower for more; every
  other token far below both.

It is a deliberately narrow judge: a program that puts the right numbers into the wrong
operation passes (3% of the warm-up's wrong programs), which RL can learn to exploit; the
metrics ``judge/yon_auc`` and the short-program share show when it does.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections.abc import Iterable

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlkd_fast.demo.tiny import SPECIAL_TOKENS
from rlkd_fast.prompts import DEFAULT_JUDGE_TEMPLATE

# The judge's words: the docstring's quotes, runs of letters, digits and underscores, newlines,
# and single punctuation marks; spaces and tabs only separate them.
WORD_SPLIT = r'"""|\w+|\n|[^\w\s]'
QUOTES = '"""'
MAX_NUMBER = 9999
DIGITS = 5  # code positions: indices up to 99,999 (numbers, then names)

# Residual stream layout (hidden size HIDDEN): what the embedding writes, then what the layers
# write. Written features are stored at FEATURE scale so the stream's RMS, which every layer
# divides by, stays within 0.1% of 1 and attention logits stay exact to ~0.1.
HIDDEN = 128
ONE, FILL, IS_BOS, IS_NUM, IS_NAME, IS_NL, IS_QUOTE, IS_RETURN = range(8)
CODE = 8  # CODE .. CODE + 10 * DIGITS - 1
(REGION, PREV_NL, FIRST_SHARE, BODY, FIRST, BODY_SHARE, BAD, RETURNS, QUESTION_NUMBER,
 USED_NUMBER, ANY_BAD, ANY_RETURN, USE_BALANCE, UNUSED, SAW_BOS) = range(CODE + 10 * DIGITS,
                                                                        CODE + 10 * DIGITS + 15)
ONE_VALUE = 8.0  # every token's constant; the stream's RMS is 1 at the embedding
FEATURE = 0.1

# Attention: 4 heads of 128; RoPE with a base so large that the upper 30 rotary pairs turn by
# under 0.002 rad over 4,096 positions (content matching), the lower 8 turn fast (position).
HEADS, HEAD_DIM, ROPE_THETA = 4, 128, 1e12
CONTENT = [*range(34, 64), *range(98, 128)]
POSITION_PAIRS = range(8)
# Attention logits of each head at a match; the margins to a non-match are >= 15.
REGION_LOGIT, DUP_LOGIT, PREV_LOGIT, ANY_LOGIT = 30.0, 15.0, 200.0, 25.0
MLP_SIZE = 16
STEP_SHARPNESS = 20.0  # silu(K u) / K is relu(u) within 0.3 / K

# Answer logits: Yes - No = +2 a for a clean program, -2 a for one failed check (a = 2).
ANSWER_LOGIT, OTHER_LOGIT = 2.0, -20.0


def _words(text: str) -> list[str]:
    return re.findall(WORD_SPLIT, text)


def non_names(template: str = DEFAULT_JUDGE_TEMPLATE) -> set[str]:
    """Words that are never a program's own variable: keywords, builtins, the prompt's words."""
    return {*keyword.kwlist, *dir(builtins), *_words(template.format(question="", program=""))}


def unstated_constants(pairs: Iterable[tuple[str, str]]) -> set[str]:
    """Numbers gold programs type although their question never states them (the 2 of "half"),
    from (question, gold program) pairs."""
    found: set[str] = set()
    for question, program in pairs:
        stated = set(re.findall(r"\d+", question))
        body = program.split(QUOTES)[-1]
        found |= {w for w in _words(body) if w.isdigit() and w not in stated}
    return found


def checklist_tokenizer(texts: Iterable[str], min_count: int = 1) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: ``<bos>`` prepended, every number up to :data:`MAX_NUMBER`, every
    keyword and builtin, and every word of ``texts`` seen ``min_count`` times one token; other
    words are ``<unk>``. Whitespace other than newlines only separates words."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

    counts: dict[str, int] = {}
    for text in texts:
        for word in _words(text):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(w for w, c in counts.items() if c >= min_count and not w.isdigit())
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS.values(), *map(str, range(MAX_NUMBER + 1)),
                                *words, *sorted(non_names()), "Yes", "No"]))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)},
                                     unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"),  # all whitespace but newlines
        pre_tokenizers.Split(Regex(WORD_SPLIT), "isolated"),
    ])
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab.index(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _embedding(tokenizer: PreTrainedTokenizerFast, constants: set[str],
               template: str) -> torch.Tensor:
    """[vocab, HIDDEN] float64: the constant, the type bits, the code of numbers and names,
    and a filler that gives every row the same norm (so the first RMS norm is exactly 1)."""
    vocab = tokenizer.get_vocab()
    if len(vocab) > 10**DIGITS:
        raise ValueError(f"a vocabulary of {len(vocab):,} words needs more than {DIGITS} code "
                         "digits")
    skip = non_names(template)
    e = torch.zeros(len(vocab), HIDDEN, dtype=torch.float64)
    e[:, ONE] = ONE_VALUE
    for word, i in vocab.items():
        if i == tokenizer.bos_token_id:
            e[i, IS_BOS] = 1
        elif word == "\n":
            e[i, IS_NL] = 1
        elif word == QUOTES:
            e[i, IS_QUOTE] = 1
        elif word == "return":
            e[i, IS_RETURN] = 1
        elif word.isdigit() or word == tokenizer.unk_token or (
                re.fullmatch(r"[A-Za-z_]\w*", word) and word not in skip):
            if not word.isdigit():
                e[i, IS_NAME] = 1
            elif word not in constants:
                e[i, IS_NUM] = 1
            for place, digit in enumerate(f"{i:0{DIGITS}d}"):
                e[i, CODE + 10 * place + int(digit)] = 1
    e[:, FILL] = (HIDDEN - e.pow(2).sum(1)).sqrt()  # every row has RMS 1
    return e


def _unit(dim: int) -> float:
    """What reading ``dim`` is multiplied by to get the feature's value."""
    return 1.0 if dim < REGION else 1 / FEATURE


def _step(mlp, neuron: int, reads: dict[int, float], threshold: float, gain: float,
          writes: int, times: int | None = None) -> None:
    """Two gated neurons writing clamp(gain * (sum reads - threshold) + 1/2, 0, 1) to ``writes``,
    multiplied by the 0/1 embedding feature ``times`` when given (``silu(K a) / K -
    silu(K (a - 1)) / K`` is that clamp for a large K)."""
    k = STEP_SHARPNESS
    for j, offset in enumerate((0.5, -0.5)):
        row = mlp.gate_proj.weight[neuron + j]
        for dim, w in reads.items():
            row[dim] = k * gain * w * _unit(dim)
        row[ONE] = k * (offset - gain * threshold) / ONE_VALUE
        if times is None:
            mlp.up_proj.weight[neuron + j, ONE] = 1 / ONE_VALUE
        else:
            mlp.up_proj.weight[neuron + j, times] = 1.0
        mlp.down_proj.weight[writes, neuron + j] = (1 if j == 0 else -1) * FEATURE / k


def _head(attn, head: int):
    """Row slices of q/k/v and the column slice of o for one head."""
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    return (attn.q_proj.weight[rows], attn.k_proj.weight[rows], attn.v_proj.weight[rows],
            attn.o_proj.weight[:, rows])


def _constant_query(q, dim: int, logit: float) -> None:
    q[dim, ONE] = logit * math.sqrt(HEAD_DIM) / ONE_VALUE


def _reads(v, o, values: dict[int, float], writes: int) -> None:
    """The head writes the attention-weighted sum of ``values`` (feature: weight)."""
    for dim, w in values.items():
        v[0, dim] = w * _unit(dim)
    o[writes, 0] = FEATURE


def _marked_head(attn, head: int, marks: tuple[int, ...], values: dict[int, float],
                 writes: int, logit: float = ANY_LOGIT) -> None:
    """A head whose attention is split evenly over the positions carrying any of the 0/1
    features ``marks`` (they outscore the rest by ``logit``), writing the mean of ``values``
    there: 1 when ``values`` is one mark and any position has it, else 0."""
    q, k, v, o = _head(attn, head)
    _constant_query(q, CONTENT[0], logit)
    for dim in marks:
        k[CONTENT[0], dim] = _unit(dim)
    _reads(v, o, values, writes)


def checklist_judge(tokenizer: PreTrainedTokenizerFast, constants: set[str],
                    template: str = DEFAULT_JUDGE_TEMPLATE) -> LlamaForCausalLM:
    """The judge's weights for ``tokenizer``; ``constants`` are numbers a program may type
    although its question does not state them (:func:`unstated_constants`)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=MLP_SIZE,
        num_hidden_layers=3, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        head_dim=HEAD_DIM, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in [model.model.norm, *(m for layer in model.model.layers
                                         for m in (layer.input_layernorm,
                                                   layer.post_attention_layernorm))]:
            norm.weight.fill_(1.0)
        model.model.embed_tokens.weight.copy_(_embedding(tokenizer, constants, template))
        first, second, third = model.model.layers
        _find_features(first)
        _flag_tokens(second)
        _verdict(third)
        # Yes - No = 2 a (1 - 2 any_bad - 2 (1 - any_return) - 2 unused - 2 (1 - saw_bos)).
        head = model.lm_head.weight
        head[:, ONE] = OTHER_LOGIT / ONE_VALUE
        for word, sign in (("Yes", 1), ("No", -1)):
            i = tokenizer.convert_tokens_to_ids(word)
            head[i, ONE] = -3 * sign * ANSWER_LOGIT / ONE_VALUE
            for dim, w in ((ANY_BAD, -2), (ANY_RETURN, 2), (UNUSED, -2), (SAW_BOS, 2)):
                head[i, dim] = sign * w * ANSWER_LOGIT * _unit(dim)
    return model.float()


def _find_features(layer) -> None:
    """Layer 1: where the token is (region), what precedes it, whether it was seen before."""
    attn = layer.self_attn
    # Region: attention split over <bos> and the quotes, reading "is a quote": c / (c + 1).
    _marked_head(attn, 0, (IS_QUOTE, IS_BOS), {IS_QUOTE: 1}, REGION, logit=REGION_LOGIT)
    # Previous token: sum over fast rotary pairs of cos(theta_i (d - 1)), largest at d = 1.
    q, k, v, o = _head(attn, 1)
    amplitude = math.sqrt(PREV_LOGIT / len(POSITION_PAIRS))
    for i in POSITION_PAIRS:
        theta = ROPE_THETA ** (-2 * i / HEAD_DIM)
        k[i, ONE] = amplitude / ONE_VALUE
        q[i, ONE] = amplitude * math.cos(theta) * math.sqrt(HEAD_DIM) / ONE_VALUE
        q[i + HEAD_DIM // 2, ONE] = -amplitude * math.sin(theta) * math.sqrt(HEAD_DIM) / ONE_VALUE
    _reads(v, o, {IS_NL: 1}, PREV_NL)
    # First occurrence: <bos> and every copy so far of the token's code score alike, so the
    # share on <bos> is 1 / (copies + 1): 1/2 for a first occurrence.
    _copies_head(attn, 2, FIRST_SHARE, in_body=False)
    _step(layer.mlp, 0, {REGION: 1}, 0.58, 12.0, BODY)  # after the docstring: c >= 2
    _step(layer.mlp, 2, {FIRST_SHARE: 1}, 0.42, 12.0, FIRST)


def _copies_head(attn, head: int, writes: int, in_body: bool) -> None:
    """Share of attention on <bos> against copies of the token's code (only those in the body
    when ``in_body``): equal logits, so 1 / (copies + 1)."""
    q, k, v, o = _head(attn, head)
    scale = DUP_LOGIT * math.sqrt(HEAD_DIM)
    for j in range(10 * DIGITS):
        q[CONTENT[j], CODE + j] = scale
        k[CONTENT[j], CODE + j] = 1
    sink = CONTENT[10 * DIGITS]
    _constant_query(q, sink, DUP_LOGIT * (DIGITS + in_body))
    k[sink, IS_BOS] = 1
    if in_body:  # a copy in the body scores DUP_LOGIT more than one before it
        _constant_query(q, sink + 1, DUP_LOGIT)
        k[sink + 1, BODY] = _unit(BODY)
    _reads(v, o, {IS_BOS: 1}, writes)


def _flag_tokens(layer) -> None:
    """Layer 2: which tokens fail a check, which return, which numbers the question states and
    which of them the body uses (its first use)."""
    _copies_head(layer.self_attn, 0, BODY_SHARE, in_body=True)
    mlp = layer.mlp
    _step(mlp, 0, {IS_NUM: 1, BODY: 1, FIRST: 1}, 2.5, 3.0, BAD)  # a number not stated
    _step(mlp, 2, {IS_NAME: 1, BODY: 1, FIRST: 1, PREV_NL: -1}, 2.5, 3.0, BAD)  # read undefined
    _step(mlp, 4, {IS_RETURN: 1, BODY: 1}, 1.5, 3.0, RETURNS)
    _step(mlp, 6, {IS_NUM: 1, BODY: -1, FIRST: 1}, 1.5, 3.0, QUESTION_NUMBER)  # before the body
    # For numbers only: in the body, seen before (so stated), first time in the body. Outside
    # the body the share is up to 1, so being there weighs most: 16 when all hold, <= 14 else.
    _step(mlp, 8, {BODY: 10, FIRST: -2, BODY_SHARE: 12}, 15, 2.0, USED_NUMBER, times=IS_NUM)


def _verdict(layer) -> None:
    """Layer 3, read at the answer slot: any failed token, any return, every stated number
    used (distinct numbers used minus distinct numbers stated, over their count + 1)."""
    attn = layer.self_attn
    _marked_head(attn, 0, (BAD,), {BAD: 1}, ANY_BAD)
    _marked_head(attn, 1, (RETURNS,), {RETURNS: 1}, ANY_RETURN)
    _marked_head(attn, 2, (QUESTION_NUMBER, USED_NUMBER, IS_BOS),
                 {USED_NUMBER: 1, QUESTION_NUMBER: -1}, USE_BALANCE)
    # One of N stated numbers unused: -1 / (2N); caught up to N = 100 or so.
    _step(layer.mlp, 0, {USE_BALANCE: -1}, 0.0025, 600.0, UNUSED)
    # A prompt cut at the front (longer than the judge's max_length) has lost <bos>, which
    # every count above needs: it cannot be checked, so it fails.
    _marked_head(attn, 3, (IS_BOS,), {IS_BOS: 1}, SAW_BOS)
