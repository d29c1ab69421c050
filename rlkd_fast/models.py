"""Loading causal LMs, sequence classifiers and their tokenizers from a hub id or a local dir.

One place decides device, dtype and attention implementation, so the student, the judge and
the reranker are loaded the same way: bf16 on GPU, fp32 on CPU, flash-attention 2 when it is
installed and the model sits on a GPU, PyTorch SDPA otherwise. A judge can be put on a device
of its own (``device="cuda:1"``) so it does not compete with the student for memory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlkd_fast.hub import missing_local_path


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else the current CUDA device when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPU (the memory and speed the judge needs), fp32 on CPU (bf16 matmuls are slow
    and inexact there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """flash-attention 2 when installed and usable (CUDA, half precision), SDPA otherwise."""
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def check_local(name_or_path: str | Path) -> None:
    """FileNotFoundError when ``name_or_path`` is a local path (see :mod:`rlkd_fast.hub`) that
    does not exist, instead of the hub's "Repo id must be in the form ..." error."""
    message = missing_local_path(str(name_or_path), "model")
    if message:
        raise FileNotFoundError(message)


def load_tokenizer(
    name_or_path: str | Path, padding_side: str = "left", config=None, **kwargs
) -> PreTrainedTokenizerBase:
    """A tokenizer with an EOS and a pad token and the given padding side (left for generation
    and last-position scoring).

    A token the tokenizer does not name is taken from the model's ``config`` when given (its
    ``eos_token_id`` / ``pad_token_id``: Galactica's tokenizer names neither, its config says
    2 and 1); a missing pad token then falls back to the EOS token.

    Raises:
        ValueError: no pad token can be found (naming the checkpoint).
        FileNotFoundError: a local path (see :func:`check_local`) that does not exist.
    """
    check_local(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    if config is not None:
        _special_from_config(tokenizer, text_config(config))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name_or_path} has neither a pad nor an EOS token, "
                             "and the model config names none")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _special_from_config(tokenizer: PreTrainedTokenizerBase, config) -> None:
    """Name the tokenizer's missing EOS / pad tokens after the ids the model config gives."""
    for kind in ("eos", "pad"):
        if getattr(tokenizer, f"{kind}_token") is not None:
            continue
        token_id = getattr(config, f"{kind}_token_id", None)
        if isinstance(token_id, (list, tuple)):  # several EOS ids: the first one ends SFT rows
            token_id = token_id[0] if token_id else None
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, f"{kind}_token", tokenizer.convert_ids_to_tokens(token_id))


def _load(
    auto_cls,
    name_or_path: str | Path,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    attn_implementation: str | None,
    **kwargs,
) -> PreTrainedModel:
    check_local(name_or_path)
    dev = pick_device(device)
    dtype = dtype or default_dtype(dev)
    attn = attn_implementation or attention_implementation(dev, dtype)
    try:
        model = auto_cls.from_pretrained(
            str(name_or_path), dtype=dtype, attn_implementation=attn, **kwargs
        )
    except (ValueError, ImportError):
        if attn == "eager":
            raise
        # Some architectures support neither flash-attention nor SDPA.
        model = auto_cls.from_pretrained(
            str(name_or_path), dtype=dtype, attn_implementation="eager", **kwargs
        )
    return model.to(dev).eval()


def load_causal_lm(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    padding_side: str = "left",
    **kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` of a causal LM, in eval mode on ``device``.

    Args:
        name_or_path: a hub id or a local checkpoint directory (holding the tokenizer too).
        device: where the model lives; default the current GPU, else the CPU.
        dtype: default bf16 on GPU, fp32 on CPU.
        attn_implementation: default flash-attention 2 where usable, else SDPA.
        padding_side: the tokenizer's padding side.
        **kwargs: passed to ``from_pretrained`` (e.g. ``revision``, ``trust_remote_code``).
    """
    model = _load(AutoModelForCausalLM, name_or_path, device, dtype, attn_implementation, **kwargs)
    tokenizer = load_tokenizer(name_or_path, padding_side=padding_side, config=model.config)
    _sync_pad(model, tokenizer)
    return model, tokenizer


def load_sequence_classifier(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    padding_side: str = "right",
    **kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` of a sequence classifier (e.g. a reranker), in eval mode.

    The model's ``pad_token_id`` is set from the tokenizer: HF classifiers find each row's last
    real token through it, and refuse batches of more than one row without it.
    """
    model = _load(
        AutoModelForSequenceClassification, name_or_path, device, dtype, attn_implementation,
        **kwargs,
    )
    tokenizer = load_tokenizer(name_or_path, padding_side=padding_side, config=model.config)
    _sync_pad(model, tokenizer)
    return model, tokenizer


def _sync_pad(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


# ---------------------------------------------------------------------------- architecture
def text_config(config):
    """The config of a model's text part: ``get_text_config()`` of a composite config (Gemma-3's
    image-text class keeps ``hidden_size``, ``vocab_size``, soft-capping there), else the config
    itself."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def output_head(model: nn.Module) -> nn.Module:
    """The LM head (``get_output_embeddings()``) of a causal LM.

    Raises:
        ValueError: the model has none (naming its class).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head


def head_width(model: nn.Module) -> int:
    """Width of the hidden states the LM head reads: what the trunk returns, which is not
    ``config.hidden_size`` everywhere (OPT-350m projects 1024 down to 512 before its head)."""
    head = output_head(model)
    weight = getattr(head, "weight", None)
    if weight is not None and weight.dim() == 2:
        return int(weight.shape[1])
    return int(text_config(model.config).hidden_size)


def lm_trunk(model: nn.Module) -> nn.Module | None:
    """The module whose last hidden state feeds the LM head: the language model of a composite
    model (``get_decoder()``), the base model otherwise; None when there is no separate one."""
    get = getattr(model, "get_decoder", None)
    trunk = get() if callable(get) else getattr(model, "base_model", None)
    return trunk if trunk is not None and trunk is not model else None


def _known_logit_transform(model: nn.Module) -> bool:
    """Config fields of heads that change the logits after the matmul: soft-capping (Gemma-2,
    PaliGemma), Cohere's ``logit_scale``, Granite's ``logits_scaling``."""
    config = text_config(model.config)
    scale = getattr(config, "logit_scale", None)
    scaling = getattr(config, "logits_scaling", None)
    return bool(getattr(config, "final_logit_softcapping", None)) or (
        scale not in (None, 1, 1.0)) or (scaling not in (None, 1, 1.0))


@torch.no_grad()
def fusable_trunk(model: nn.Module, probe_tokens: int = 8) -> nn.Module | None:
    """The trunk when ``model``'s logits are exactly its LM head applied to the trunk's last
    hidden state, so a caller may apply the head itself (fused with a reduction, or only on the
    rows it needs); None when the model does more after the head.

    Known transforms are read from the config; anything else shows on a probe: one forward of
    ``probe_tokens`` tokens compares the model's logits with ``head(trunk(ids))``.
    """
    trunk = lm_trunk(model)
    if trunk is None or _known_logit_transform(model):
        return None
    head = output_head(model)
    vocab = int(getattr(head, "out_features", 0) or text_config(model.config).vocab_size)
    ids = (torch.arange(probe_tokens) % vocab)[None].to(model_device(model))
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids, use_cache=False).logits.float()
        out = trunk(input_ids=ids, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        mine = head(hidden).float()
    except TypeError:  # a trunk that cannot be called on its own: use the model's logits
        return None
    finally:
        model.train(was_training)
    if mine.shape != logits.shape:
        return None
    tol = 1e-3 * max(1.0, logits.abs().max().item())
    return trunk if (mine - logits).abs().max().item() <= tol else None


def disable_dropout(model: nn.Module) -> list[str]:
    """Set every dropout rate of ``model`` to 0, for RL (as TRL, OpenRLHF and verl do): then a
    forward in train mode equals one in eval mode, so the first minibatch's ratio to the
    rollout's log-probs is exactly 1 and its KL to an identical reference exactly 0.

    HF models keep rates in three places, all set here: ``nn.Dropout`` modules (GPT-2), float
    attributes that functional dropout reads (OPT's ``self.dropout``, ``layerdrop``, attention
    ``dropout=self.attention_dropout if self.training``), and config fields (``dropout``,
    ``attn_pdrop``, ... of the config and its sub-configs), which some code reads at forward
    time. Returns the names of what was changed (empty when nothing had dropout).
    """
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            module.p = 0.0
            changed.append(f"{name}.p")
        for attr, value in list(vars(module).items()):
            if "drop" in attr.lower() and isinstance(value, float) and value > 0:
                setattr(module, attr, 0.0)
                changed.append(f"{name}.{attr}")
    config = getattr(model, "config", None)
    if config is not None:
        changed += _zero_config_dropout(config, "config")
    return changed


def _zero_config_dropout(config, prefix: str) -> list[str]:
    changed = []
    for key, value in list(vars(config).items()):
        if "drop" in key.lower() and isinstance(value, float) and value > 0:
            setattr(config, key, 0.0)
            changed.append(f"{prefix}.{key}")
        elif hasattr(value, "to_dict") and hasattr(value, "model_type"):  # a sub-config
            changed += _zero_config_dropout(value, f"{prefix}.{key}")
    return changed
