"""The embedded default's "teacher": a tiny causal LM taught locally to answer Yes or No.

Real runs use an LLM judge (Qwen3-8B in the paper). Offline, on a CPU, we teach a tiny model the
same job on the judge prompt: correct programs -> "Yes", wrong ones -> "No". Wrong programs come
from the kinds of mistakes a student makes (a changed operator, a mistyped number, an early
return, swapped operands); each candidate is labelled by running it, not by how it was made.
Only the two answer logits are trained (cross-entropy over [z_Yes, z_No] at the last position),
which is exactly what the YoN reward reads.

A judge taught from scratch learns only the base rate (measured: the same score for every
program, pairwise accuracy 26% on correct vs mistaken programs). So, like a real judge that can
solve the problems it grades, the teacher first learns to write the programs itself
(``learn_to_solve``, on problems of its own), and only then to answer Yes/No (pairwise 67% after
that, same data and steps). :func:`build_judge` does all of it and saves the judge.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from rlkd_fast.checkpoint import save_model
from rlkd_fast.data import Problem
from rlkd_fast.demo.tiny import tiny_causal_lm
from rlkd_fast.judges import resolve_token_ids
from rlkd_fast.prompts import judge_prompt, program_header
from rlkd_fast.sft import sft_loss

_OPS = ["+", "-", "*", "/"]
_ASSIGN = re.compile(r"^(\s+)(\w+) = (.+)$")
_BINOP = re.compile(r"(\w+(?:\.\d+)?) ([+\-*/]) (\w+(?:\.\d+)?)")


def corrupt_program(program: str, rng: random.Random) -> str:
    """One plausible mistake in ``program`` (a ReFT-style ``def solution()`` function)."""
    lines = program.split("\n")
    body = [i for i, line in enumerate(lines) if _ASSIGN.match(line)]
    if not body:
        return program
    kind = rng.choice(["operator", "number", "early_return", "swap", "truncate"])
    arithmetic = [i for i in body if _BINOP.search(lines[i])]
    if kind == "operator" and arithmetic:
        i = rng.choice(arithmetic)
        m = _BINOP.search(lines[i])
        op = rng.choice([o for o in _OPS if o != m.group(2)])
        lines[i] = lines[i][: m.start(2)] + op + lines[i][m.end(2):]
    elif kind == "swap" and arithmetic:
        i = rng.choice(arithmetic)
        m = _BINOP.search(lines[i])
        swapped = f"{m.group(3)} {m.group(2)} {m.group(1)}"
        lines[i] = lines[i][: m.start()] + swapped + lines[i][m.end():]
    elif kind == "truncate" and len(body) >= 2:
        cut = rng.choice(body[1:])
        lines = lines[:cut]
    elif kind == "early_return" and len(body) >= 2:
        cut = rng.choice(body[:-1])
        name = _ASSIGN.match(lines[cut]).group(2)
        indent = _ASSIGN.match(lines[cut]).group(1)
        ret = next((j for j in range(len(lines)) if lines[j].strip().startswith("return")), None)
        if ret is not None:
            lines[ret] = f"{indent}return {name}"
    else:
        literal = re.compile(r"\d+(\.\d+)?")
        numeric = [i for i in body if literal.fullmatch(_ASSIGN.match(lines[i]).group(3))]
        if not numeric:
            return corrupt_program(program, rng) if arithmetic else program
        i = rng.choice(numeric)
        m = _ASSIGN.match(lines[i])
        value = float(m.group(3))
        new = max(1, int(value) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
        lines[i] = f"{m.group(1)}{m.group(2)} = {new}"
    return "\n".join(lines)


def judge_examples(
    questions: Sequence[str], programs: Sequence[str], answers: Sequence[float],
    run_programs, seed: int = 0, wrong_per_right: int = 1,
) -> list[tuple[str, str, bool]]:
    """(question, program, is_correct) pairs: each correct program and ``wrong_per_right``
    corrupted versions, labelled by executing every candidate with ``run_programs``."""
    rng = random.Random(seed)
    candidates = []
    for q, p, a in zip(questions, programs, answers, strict=True):
        candidates.append((q, p, a))
        for _ in range(wrong_per_right):
            candidates.append((q, corrupt_program(p, rng), a))
    return label_programs(candidates, run_programs)


def label_programs(candidates: Sequence[tuple[str, str, float]],
                   run_programs) -> list[tuple[str, str, bool]]:
    """(question, program, is_correct) for (question, program, gold answer) candidates: each
    program executed with ``run_programs`` and compared with the answer (within 1e-2)."""
    results = run_programs([p for _, p, _ in candidates])
    out = []
    for (q, p, a), res in zip(candidates, results, strict=True):
        ok = res.status == "ok" and res.value is not None and math.isfinite(res.value) \
            and abs(res.value - a) <= 1e-2
        out.append((q, p, ok))
    return out


def _update(model, opt, sched, loss: torch.Tensor) -> float:
    """One clipped optimizer step on ``loss``; returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.item()


def learn_to_solve(model, tokenizer, problems, prompt, epochs: float, batch_size: int = 32,
                   lr: float = 3e-3, seed: int = 0, progress: bool = True) -> list[float]:
    """SFT ``model`` to write each problem's program (the teacher's own warm-up)."""
    torch.manual_seed(seed)
    model.train()
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = max(1, int(epochs * len(problems) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="teacher solves", disable=not progress):
        idx = torch.randint(len(problems), (batch_size,), generator=gen).tolist()
        loss = sft_loss(model, tokenizer, [problems[i] for i in idx], prompt, 512, 256, device)
        losses.append(_update(model, opt, sched, loss))
    model.eval()
    return losses


def teach_judge(
    model, tokenizer, prompts: Sequence[str], labels: Sequence[bool],
    yes_ids: Sequence[int], no_ids: Sequence[int],
    epochs: float = 2.0, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` so that at each prompt's last token z_Yes - z_No says the label.

    Each side's logit is the logsumexp over its token ids, as in the YoN reward. Returns the
    per-step losses. Prompts are left padded, so the last position is the answer slot.
    """
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    target = torch.tensor([0 if y else 1 for y in labels])  # class 0 = Yes, 1 = No
    steps = max(1, int(epochs * len(prompts) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(prompts), generator=gen)
    losses, cursor = [], 0
    tokenizer.padding_side = "left"
    head = model.get_output_embeddings().weight
    for _ in tqdm(range(steps), desc="teach judge", disable=not progress):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(prompts), generator=gen), 0
        idx = order[cursor: cursor + batch_size]
        cursor += batch_size
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True)
        enc = {k: v.to(head.device) for k, v in enc.items()}
        hidden = model.base_model(**enc).last_hidden_state[:, -1].float()
        z_yes = torch.logsumexp(hidden @ head[list(yes_ids)].float().T, dim=-1)
        z_no = torch.logsumexp(hidden @ head[list(no_ids)].float().T, dim=-1)
        logits = torch.stack([z_yes, z_no], dim=-1)
        loss = F.cross_entropy(logits, target[idx].to(head.device))
        losses.append(_update(model, opt, sched, loss))
    model.eval()
    return losses


def build_judge(
    path: str | Path, tokenizer_dir: str | Path, problems: Sequence[Problem],
    open_executor: Callable, device: torch.device, seed: int = 0, sft_epochs: float = 4.0,
    epochs: float = 2.0, progress: bool = True,
) -> None:
    """Teach the tiny judge on ``problems`` (labeled, with programs) and save it to ``path``.

    Each problem's program and one corrupted copy, labelled by running them in the executor
    ``open_executor()`` returns (opened only for that), become judge prompts; a 2-layer model on
    the tokenizer in ``tokenizer_dir`` first learns to solve the problems (``sft_epochs``, 0 to
    skip), then to answer Yes/No (``epochs``)."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.padding_side = "left"
    with open_executor() as ex:
        examples = judge_examples([p.question for p in problems], [p.program for p in problems],
                                  [p.answer for p in problems], ex.run, seed=seed,
                                  wrong_per_right=1)
    prompts = [judge_prompt(q, prog) for q, prog, _ in examples]
    labels = [ok for _, _, ok in examples]
    model = tiny_causal_lm(tok, hidden_size=128, layers=2, heads=4, max_positions=1024,
                           seed=seed + 1).to(device)
    if sft_epochs > 0:
        learn_to_solve(model, tok, problems, program_header, sft_epochs, seed=seed,
                       progress=progress)
    teach_judge(model, tok, prompts, labels, resolve_token_ids(tok, ["Yes"]),
                resolve_token_ids(tok, ["No"]), epochs=epochs, batch_size=32, lr=1e-3, seed=seed,
                progress=progress)
    save_model(model, tok, path)
