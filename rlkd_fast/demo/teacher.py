"""The embedded judge's teaching: mistakes a student makes, labels from execution, and a
Yes/No teaching loop with a label at every token.

Real runs use an LLM judge (Qwen3-8B in the paper). Offline we teach a tiny model the same job
on the same judge prompt: correct programs -> "Yes", wrong ones -> "No". The wrong programs are
the warm-up student's own samples and corrupted gold programs (a mistyped or miscopied number, a
name that was never defined, a changed operator, swapped operands, an early return); every
program is labelled by running it, never by how it was made.

Only the two answer logits are trained (binary cross-entropy on z_Yes - z_No, each side a
logsumexp over its token ids, exactly what the YoN reward reads). Where we know where a program
first goes wrong (a corrupted copy of a gold program), every token of its body is also taught
whether the program is still right up to there: a label per token, not one per program, which
teaches "this number is not in the question" far faster than the final verdict alone.
:mod:`rlkd_fast.demo.build_judge` puts it together.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlkd_fast.judges import resolve_token_ids
from rlkd_fast.prompts import judge_prompt
from rlkd_fast.rollout import pad_rows

_OPS = ["+", "-", "*", "/"]
_ASSIGN = re.compile(r"^(\s+)(\w+) = (.+)$")
_BINOP = re.compile(r"(\w+(?:\.\d+)?) ([+\-*/]) (\w+(?:\.\d+)?)")


_NUMBER_LINE = re.compile(r"^(\s+\w+ = )(\d+)$", re.M)
_WORD = re.compile(r"\b([a-z]+)(_\w+)?\b")
# The nouns synthetic programs name their variables after: a student that swaps one for another
# (``flowers_each`` for ``stickers_each``) uses a name that was never defined.
_NOUNS = ("apples", "marbles", "stickers", "cookies", "stamps", "shells", "cards", "pencils",
          "beads", "books", "eggs", "candies", "toys", "balloons", "flowers", "coins", "boxes",
          "bags", "jars", "packs", "baskets", "money", "cakes", "muffins", "pies", "chairs",
          "bottles", "lamps", "melons", "shirts", "hats", "cups", "friends", "total")


def _body_start(program: str) -> int:
    """Where the body starts: after the docstring's closing quotes, else after the def line."""
    first = program.find('"""')
    close = program.find('"""', first + 3) if first >= 0 else -1
    return close + 3 if close >= 0 else program.find("\n") + 1


def _miscopy(program: str, question: str, rng: random.Random) -> str | None:
    """A number copied wrong: off by a little, a digit added or dropped, or another number of
    the question."""
    found = list(_NUMBER_LINE.finditer(program))
    if not found:
        return None
    m = rng.choice(found)
    old = m.group(2)
    others = [n for n in re.findall(r"\d+", question) if n != old]
    kind = rng.choice(("near", "digit", "other"))
    if kind == "near":
        new = str(max(1, int(old) + rng.choice((-10, -2, -1, 1, 2, 10))))
    elif kind == "digit":
        new = old + str(rng.randint(0, 9)) if len(old) == 1 or rng.random() < 0.5 else old[:-1]
    else:
        new = rng.choice(others) if others else str(int(old) + 1)
    return program[:m.start(2)] + new + program[m.end(2):]


def _rename(program: str, rng: random.Random) -> str | None:
    """One use of a name replaced: its noun swapped for another (usually undefined), or
    another name of the program."""
    start = _body_start(program)
    body = program[start:]
    names = [m for m in _WORD.finditer(body) if m.group(1) in _NOUNS]
    if not names:
        return None
    m = rng.choice(names)
    new = rng.choice([n for n in _NOUNS if n != m.group(1)])
    return program[:start + m.start(1)] + new + program[start + m.end(1):]


def corrupt_program(program: str, rng: random.Random, question: str = "") -> str:
    """One plausible mistake in ``program`` (a ReFT-style ``def solution()`` function): the
    kinds a warm-up student makes most (miscopied numbers, undefined names) twice as often as
    the others (a changed operator, swapped operands, an early return, a cut-off body)."""
    kind = rng.choice(("miscopy", "miscopy", "rename", "rename", "operator", "swap",
                       "early_return", "truncate"))
    if kind == "miscopy":
        return _miscopy(program, question, rng) or _classic(program, rng, "number")
    if kind == "rename":
        return _rename(program, rng) or _classic(program, rng, "operator")
    return _classic(program, rng, kind)


def _classic(program: str, rng: random.Random, kind: str) -> str:
    lines = program.split("\n")
    body = [i for i, line in enumerate(lines) if _ASSIGN.match(line)]
    if not body:
        return program
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
            return _classic(program, rng, "operator") if arithmetic else program
        i = rng.choice(numeric)
        m = _ASSIGN.match(lines[i])
        value = float(m.group(3))
        new = max(1, int(value) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
        lines[i] = f"{m.group(1)}{m.group(2)} = {new}"
    return "\n".join(lines)


@dataclass(frozen=True)
class JudgeExample:
    """A program the judge is taught on.

    Attributes:
        question, program: what the judge prompt shows.
        correct: what running the program says (its value equals the gold answer).
        error_at: for a wrong program made from a correct one, the character offset in
            ``program`` where the two first differ (the body is right before it); None where
            unknown (a sampled wrong program) or for a correct one.
    """

    question: str
    program: str
    correct: bool
    error_at: int | None = None


def _first_difference(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def judge_examples(
    questions: Sequence[str], programs: Sequence[str], answers: Sequence[float],
    run_programs, seed: int = 0, wrong_per_right: int = 1,
) -> list[JudgeExample]:
    """Each (correct) program and ``wrong_per_right`` corrupted copies, every one labelled by
    executing it with ``run_programs``; a wrong copy records where it departs from the original."""
    rng = random.Random(seed)
    candidates, sources = [], []
    for q, p, a in zip(questions, programs, answers, strict=True):
        for copy in range(1 + wrong_per_right):
            candidates.append((q, p if copy == 0 else corrupt_program(p, rng, q), a))
            sources.append(p)
    return [JudgeExample(q, p, ok, None if ok else _first_difference(p, src))
            for (q, p, ok), src in zip(label_programs(candidates, run_programs), sources,
                                       strict=True)]


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


def token_labels(example: JudgeExample, tokenizer, template: str | None = None
                 ) -> tuple[list[int], list[float]]:
    """The judge prompt's token ids and a label per token: 1 where the program is still right
    up to that token, 0 where it has gone wrong, -1 (not taught) before the body or where
    unknown; the last token (the answer slot) always carries the program's verdict."""
    kw = {"template": template} if template else {}
    text = judge_prompt(example.question, example.program, **kw)
    offset = text.index(example.program)
    body = offset + _body_start(example.program)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for _, end in enc["offset_mapping"]:
        if end <= body or (not example.correct and example.error_at is None):
            labels.append(-1.0)
        elif example.correct:
            labels.append(1.0)
        else:
            labels.append(1.0 if end <= offset + example.error_at else 0.0)
    labels[-1] = float(example.correct)
    return list(enc["input_ids"]), labels


def teach_judge(
    model, tokenizer, examples: Sequence[JudgeExample], steps: int, batch_size: int = 32,
    lr: float = 2e-3, seed: int = 0, dense_weight: float = 1.0, template: str | None = None,
    progress: bool = True,
) -> list[float]:
    """Teach ``model`` to say Yes for correct programs and No for wrong ones.

    Each step draws ``batch_size`` examples, half correct and half wrong (with replacement), and
    minimises the binary cross-entropy of z_Yes - z_No (each a logsumexp over the word's token
    ids, as the YoN reward reads them) against the verdict at the last position, plus
    ``dense_weight`` times the same loss against :func:`token_labels` at every labelled token.
    AdamW with a one-cycle schedule peaking at ``lr``. Returns the per-step losses; the model is
    left in eval mode."""
    yes = resolve_token_ids(tokenizer, ["Yes"])
    no = resolve_token_ids(tokenizer, ["No"])
    encoded = [token_labels(e, tokenizer, template) for e in examples]
    right = [i for i, e in enumerate(examples) if e.correct]
    wrong = [i for i, e in enumerate(examples) if not e.correct]
    if not right or not wrong:
        raise ValueError(f"need correct and wrong examples, got {len(right)} and {len(wrong)}")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    head = model.get_output_embeddings().weight
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps),
                                                pct_start=0.05)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="teach judge", disable=not progress):
        rows = [encoded[rng.choice(right if k % 2 == 0 else wrong)] for k in range(batch_size)]
        ids, mask = pad_rows([r[0] for r in rows], tokenizer.pad_token_id, "left")
        labels = torch.full(ids.shape, -1.0)
        for k, (_, lab) in enumerate(rows):
            labels[k, ids.shape[1] - len(lab):] = torch.tensor(lab)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        hidden = model.base_model(input_ids=ids, attention_mask=mask,
                                  position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
                                  ).last_hidden_state.float()
        margin = (torch.logsumexp(hidden @ head[yes].float().T, -1)
                  - torch.logsumexp(hidden @ head[no].float().T, -1))
        loss = F.binary_cross_entropy_with_logits(margin[:, -1], labels[:, -1])
        taught = labels >= 0
        if dense_weight:
            loss = loss + dense_weight * F.binary_cross_entropy_with_logits(margin[taught],
                                                                            labels[taught])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
