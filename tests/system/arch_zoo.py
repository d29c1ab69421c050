"""Tiny random models of the architectures the paper's users bring, built offline for the tests.

Each model comes with a tokenizer trained here (``tokenizers``) on the synthetic problems that
follows the real checkpoint's conventions: which special tokens it names (Galactica's names
none), their ids (first or after the vocabulary), whether it adds a BOS, byte-level leading-space
pieces ("ĠYes") or SentencePiece ones ("▁Yes", with the bare "Yes" after a newline), the chat
template of chat judges, extra EOS ids in the generation config, and padded embedding rows (a
model vocabulary larger than the tokenizer's, as Qwen's 151936 rows for 151665 tokens).
Everything goes through ``save_pretrained`` / ``from_pretrained`` like a real checkpoint.

Real checkpoints each mirrors: Galactica-125M / OPT-350m (OPT), CodeGen-350M-mono, Qwen2.5,
Qwen3, Pythia (GPT-NeoX), GPT-2, Gemma-3 (text and image-text classes), Phi-2, Gemma-2
(soft-capped head), Cohere (scaled logits); judges Qwen3-8B, Llama-3.1-8B-Instruct,
Phi-3-mini-4k-instruct, Gemma-3-12B-it; the ReFT reranker (OPT sequence classifier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from rlkd_fast.data import load_split
from rlkd_fast.prompts import DEFAULT_JUDGE_TEMPLATE, program_body, program_header

# --------------------------------------------------------------------------- chat templates
# The real templates' shapes for a single user turn and the generation prompt.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\\n'}}"
    "{% endif %}{% endfor %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) "
    "+ '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


# --------------------------------------------------------------------------- tokenizers
@dataclass(frozen=True)
class TokenizerSpec:
    """How a real tokenizer is laid out (see the module docstring)."""

    style: str  # "bytelevel" | "sentencepiece" (Llama-2/Phi-3: "▁" prefix) | "gemma" (none)
    first: tuple[str, ...] = ()  # special tokens at ids 0.. in this order
    last: tuple[str, ...] = ()  # special tokens after the learned vocabulary
    added: tuple[str, ...] = ()  # non-special added tokens (Qwen3's <think>)
    named: dict[str, str] = field(default_factory=dict)  # bos/eos/pad/unk the tokenizer names
    add_bos: bool = False
    digits: bool = False  # every digit its own token (Galactica, Qwen)
    chat_template: str | None = None


TOKENIZERS: dict[str, TokenizerSpec] = {
    # GPT-2 / CodeGen / Phi-2: <|endoftext|> after the vocabulary is BOS = EOS = UNK, no pad.
    "gpt2": TokenizerSpec("bytelevel", last=("<|endoftext|>",),
                          named=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>")),
    # OPT: <s> <pad> </s> <unk> first; "</s>" is both BOS (added) and EOS.
    "opt": TokenizerSpec("bytelevel", first=("<s>", "<pad>", "</s>", "<unk>"),
                         named=dict(bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                    unk_token="<unk>"), add_bos=True),
    # Galactica: the same four first, but its tokenizer names none of them (the config does);
    # digits split.
    "galactica": TokenizerSpec("bytelevel", first=("<s>", "<pad>", "</s>", "<unk>"),
                               digits=True),
    # Pythia: <|endoftext|> = 0 is BOS = EOS = UNK, <|padding|> = 1 is not named.
    "pythia": TokenizerSpec("bytelevel", first=("<|endoftext|>", "<|padding|>"),
                            named=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                       unk_token="<|endoftext|>")),
    # Qwen2.5 base: no BOS, EOS = pad = <|endoftext|>, specials after the vocabulary.
    "qwen2": TokenizerSpec("bytelevel", last=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                           named=dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
                           digits=True),
    # Qwen3: EOS <|im_end|>, pad <|endoftext|>, <think> tokens not special.
    "qwen3": TokenizerSpec("bytelevel", last=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                           added=("<think>", "</think>"),
                           named=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
                           digits=True, chat_template=QWEN3_TEMPLATE),
    # Llama-3.1-Instruct: BOS added, EOS <|eot_id|>, no pad.
    "llama31": TokenizerSpec("bytelevel", last=("<|begin_of_text|>", "<|end_of_text|>",
                                                "<|start_header_id|>", "<|end_header_id|>",
                                                "<|eom_id|>", "<|eot_id|>"),
                             named=dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
                             add_bos=True, chat_template=LLAMA31_TEMPLATE),
    # Phi-3: SentencePiece (Llama-2 style "▁" prefix), <unk> <s> </s> first, BOS added, EOS =
    # pad = <|endoftext|> after the vocabulary with the chat tokens.
    "phi3": TokenizerSpec("sentencepiece", first=("<unk>", "<s>", "</s>"),
                          last=("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>",
                                "<|user|>"),
                          named=dict(bos_token="<s>", eos_token="<|endoftext|>",
                                     pad_token="<|endoftext|>", unk_token="<unk>"),
                          add_bos=True, chat_template=PHI3_TEMPLATE),
    # Gemma: <pad> <eos> <bos> <unk> first, BOS added, spaces become "▁" without a prefix.
    "gemma": TokenizerSpec("gemma", first=("<pad>", "<eos>", "<bos>", "<unk>",
                                           "<start_of_turn>", "<end_of_turn>"),
                           last=("<image_soft_token>",),
                           named=dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                      unk_token="<unk>"),
                           add_bos=True, chat_template=GEMMA3_TEMPLATE),
}


@cache
def corpus() -> tuple[str, ...]:
    """Texts the tokenizers learn from: student prompts and programs, judge prompts, and the
    answer words in the places a judge writes them (after a space and after a newline)."""
    problems = load_split("synthetic:2", split="train", size=300, seed=11)
    texts = [program_header(p.question) + program_body(p.program) for p in problems]
    texts += [DEFAULT_JUDGE_TEMPLATE.replace("{question}", p.question)
              .replace("{program}", p.program) + " Yes" for p in problems[:50]]
    texts += ["Answer: Yes\nYes\nAnswer: No\nNo\n"] * 50
    return tuple(texts)


def build_tokenizer(name: str, vocab_size: int = 420) -> PreTrainedTokenizerFast:
    """The tiny tokenizer of family ``name`` (a key of :data:`TOKENIZERS`)."""
    spec = TOKENIZERS[name]
    unk = "<unk>" if "<unk>" in spec.first else None
    tok = Tokenizer(models.BPE(unk_token=unk))
    if spec.style == "bytelevel":
        split = [pre_tokenizers.Digits(individual_digits=True)] if spec.digits else []
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        prefix = spec.style == "sentencepiece"  # Llama-2 / Phi-3 prepend "▁" to the text
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never")
        steps = [decoders.Replace("▁", " ")] + ([decoders.Strip(" ", 1, 0)] if prefix else [])
        tok.decoder = decoders.Sequence(steps)
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(spec.first),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens(list(spec.last))
    tok.add_tokens(list(spec.added))
    if spec.add_bos:
        bos = spec.named["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[
                (bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **spec.named)
    if spec.chat_template:
        fast.chat_template = spec.chat_template
    return fast


def token_id(tokenizer, token: str) -> int:
    i = tokenizer.convert_tokens_to_ids(token)
    assert i is not None and tokenizer.convert_ids_to_tokens(i) == token, token
    return int(i)


def padded(tokenizer, extra: int) -> int:
    """A model vocabulary ``extra`` rows larger than the tokenizer (0: exactly its size)."""
    return len(tokenizer) + extra


# --------------------------------------------------------------------------- models
def _small(**kw) -> dict:
    return dict(num_hidden_layers=2, num_attention_heads=2, **kw)


def _opt(tok, *, proj: int | None, classifier: bool = False):
    from transformers import OPTConfig, OPTForCausalLM, OPTForSequenceClassification

    # Galactica-125M: word_embed_proj_dim = hidden_size, pre-norm, GELU, dropout 0.1, exact
    # vocabulary. OPT-350m: hidden 1024 projected to 512 for the embeddings and the head,
    # post-norm, ReLU, padded vocabulary (50272 rows for 50265 tokens).
    galactica = proj is None
    config = OPTConfig(
        vocab_size=padded(tok, 0 if galactica else 7), hidden_size=32, ffn_dim=64,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=512,
        word_embed_proj_dim=32 if galactica else proj, do_layer_norm_before=galactica,
        activation_function="gelu" if galactica else "relu", dropout=0.1,
        attention_dropout=0.1, pad_token_id=1, bos_token_id=0 if galactica else 2,
        eos_token_id=2, num_labels=2)
    return (OPTForSequenceClassification if classifier else OPTForCausalLM)(config)


def _codegen(tok):
    from transformers import CodeGenConfig, CodeGenForCausalLM

    eot = token_id(tok, "<|endoftext|>")
    return CodeGenForCausalLM(CodeGenConfig(
        vocab_size=padded(tok, 45), n_embd=32, n_layer=2, n_head=2, rotary_dim=8,
        n_positions=512, n_ctx=512, bos_token_id=eot, eos_token_id=eot,
        tie_word_embeddings=False))


def _phi(tok):
    from transformers import PhiConfig, PhiForCausalLM

    eot = token_id(tok, "<|endoftext|>")
    return PhiForCausalLM(PhiConfig(
        vocab_size=padded(tok, 45), hidden_size=32, intermediate_size=64,
        partial_rotary_factor=0.5, resid_pdrop=0.1, max_position_embeddings=512,
        bos_token_id=eot, eos_token_id=eot, **_small()))


def _gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    eot = token_id(tok, "<|endoftext|>")
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=padded(tok, 0), n_embd=32, n_layer=2, n_head=2, n_positions=512,
        bos_token_id=eot, eos_token_id=eot))  # dropouts 0.1, as GPT-2's


def _gpt_neox(tok):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=padded(tok, 27), hidden_size=32, intermediate_size=64, rotary_pct=0.25,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=False, **_small()))


def _qwen(tok, version: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if version == 2 else (
        Qwen3Config, Qwen3ForCausalLM)
    extra = dict(head_dim=16) if version == 3 else {}
    return model_cls(config_cls(
        vocab_size=padded(tok, 61), hidden_size=32, intermediate_size=64,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=token_id(tok, "<|endoftext|>"), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **extra, **_small()))


def _llama31(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=padded(tok, 0), hidden_size=32, intermediate_size=64,
        num_key_value_heads=1, max_position_embeddings=512,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=128),
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **_small()))
    model.generation_config.eos_token_id = [token_id(tok, t) for t in (
        "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    return model


def _phi3(tok):
    from transformers import Phi3Config, Phi3ForCausalLM

    model = Phi3ForCausalLM(Phi3Config(
        vocab_size=padded(tok, 53), hidden_size=32, intermediate_size=64,
        max_position_embeddings=512, original_max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **_small()))
    model.generation_config.eos_token_id = [token_id(tok, t) for t in (
        "<|endoftext|>", "<|assistant|>", "<|end|>")]
    return model


def _gemma_text_config(tok, **kw):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=padded(tok, 63), hidden_size=32, intermediate_size=64, head_dim=16,
        num_key_value_heads=1, max_position_embeddings=512, sliding_window=16,
        query_pre_attn_scalar=16, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        **_small(), **kw)


def _gemma3_text(tok):
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM(_gemma_text_config(tok))


def _gemma3(tok):
    """The image-text class of Gemma-3-12B: a composite config (text + SigLIP vision)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, image_size=28, patch_size=14)
    config = Gemma3Config(text_config=_gemma_text_config(tok), vision_config=vision,
                          mm_tokens_per_image=4,
                          image_token_index=token_id(tok, "<image_soft_token>"),
                          boi_token_index=token_id(tok, "<start_of_turn>"),
                          eoi_token_index=token_id(tok, "<end_of_turn>"))
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = [1, token_id(tok, "<end_of_turn>")]
    return model


def _gemma2(tok):
    """Gemma-2: the head's logits are soft-capped, cap * tanh(logits / cap). The cap is small
    here so that it changes a tiny random model's log-probs visibly."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(
        vocab_size=padded(tok, 63), hidden_size=32, intermediate_size=64, head_dim=16,
        num_key_value_heads=1, max_position_embeddings=512, final_logit_softcapping=0.05,
        query_pre_attn_scalar=16, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        **_small()))


def _cohere(tok):
    """Cohere: logits scaled by ``logit_scale`` after the head."""
    from transformers import CohereConfig, CohereForCausalLM

    return CohereForCausalLM(CohereConfig(
        vocab_size=padded(tok, 0), hidden_size=32, intermediate_size=64,
        num_key_value_heads=1, max_position_embeddings=512, logit_scale=4.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, **_small()))


@dataclass(frozen=True)
class ModelSpec:
    tokenizer: str  # a key of TOKENIZERS
    build: Callable  # tokenizer -> model
    role: str = "student"  # "student" | "judge" | "reranker" | "head" (direct checks only)


MODELS: dict[str, ModelSpec] = {
    "opt": ModelSpec("galactica", lambda t: _opt(t, proj=None)),
    "opt350": ModelSpec("opt", lambda t: _opt(t, proj=16)),
    "codegen": ModelSpec("gpt2", _codegen),
    "qwen2": ModelSpec("qwen2", lambda t: _qwen(t, 2)),
    "qwen3": ModelSpec("qwen3", lambda t: _qwen(t, 3)),
    "gpt_neox": ModelSpec("pythia", _gpt_neox),
    "gpt2": ModelSpec("gpt2", _gpt2),
    "gemma3_text": ModelSpec("gemma", _gemma3_text),
    "gemma3": ModelSpec("gemma", _gemma3),
    "phi": ModelSpec("gpt2", _phi),
    "gemma2": ModelSpec("gemma", _gemma2, role="head"),
    "cohere": ModelSpec("llama31", _cohere, role="head"),
    "qwen3_judge": ModelSpec("qwen3", lambda t: _qwen(t, 3), role="judge"),
    "llama31_judge": ModelSpec("llama31", _llama31, role="judge"),
    "phi3_judge": ModelSpec("phi3", _phi3, role="judge"),
    "gemma3_judge": ModelSpec("gemma", _gemma3, role="judge"),
    "opt_reranker": ModelSpec("galactica", lambda t: _opt(t, proj=None, classifier=True),
                              role="reranker"),
}
STUDENTS = [name for name, spec in MODELS.items() if spec.role == "student"]
JUDGES = [name for name, spec in MODELS.items() if spec.role == "judge"]


class Zoo:
    """Builds (once) and saves each tiny model with its tokenizer under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._tokenizers: dict[str, PreTrainedTokenizerFast] = {}

    def tokenizer(self, family: str) -> PreTrainedTokenizerFast:
        if family not in self._tokenizers:
            self._tokenizers[family] = build_tokenizer(family)
        return self._tokenizers[family]

    def path(self, name: str) -> Path:
        """The checkpoint directory of model ``name`` (a key of :data:`MODELS`)."""
        out = self.root / name
        if not (out / "config.json").exists():
            spec = MODELS[name]
            tok = self.tokenizer(spec.tokenizer)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sum(map(ord, name)))
                model = spec.build(tok)
            model.save_pretrained(out)
            tok.save_pretrained(out)
        return out
