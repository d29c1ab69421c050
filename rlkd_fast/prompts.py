"""Prompt builders and program helpers for program-of-thought (PoT) math reasoning.

Formats follow ReFT (``docs/method.md``, "Prompts and programs"):

- student prompt: ``"Question:\\n{question}\\nAnswer reasoning:\\n"``, optionally primed with the
  program header ``def solution():\\n    \"\"\"{question}\"\"\"\\n`` so the model writes the body;
- a generated program is cut at the first blank line after its header before it runs, and its
  statement lines are counted for the anti-hacking mask (:func:`count_program_lines`);
- the judge sees the (question, program) pair through a configurable template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QUESTION_PROMPT = "Question:\n{question}\nAnswer reasoning:\n"
PROGRAM_HEADER = 'def solution():\n    """{question}"""\n'
#: Appended to the docstring by the anti-hacking option (paper, App. B.3).
ANTI_HACKING_SUFFIX = (
    "Please provide full reasoning before computing result; do not answer with result only."
)
#: The paper does not give its judge prompt: this default is an assumption (docs/method.md).
DEFAULT_JUDGE_TEMPLATE = (
    "Question: {question}\nProposed solution:\n{program}\n"
    "Is the above solution correct? Answer with Yes or No.\nAnswer:"
)
#: Input format of ReFT's reranker (a sequence classifier).
RERANK_TEMPLATE = "Question:\n{question}\nAnswer reasoning:\n{program}"


def _docstring_text(question: str, anti_hacking: bool) -> str:
    """The docstring body: the question, plus the anti-hacking request when asked."""
    if not anti_hacking:
        return question
    return f"{question.rstrip()} {ANTI_HACKING_SUFFIX}"


def program_header(question: str, anti_hacking: bool = False) -> str:
    """``def solution():`` and the docstring holding the question, ending in a newline."""
    return PROGRAM_HEADER.format(question=_docstring_text(question, anti_hacking))


def pot_prompt(question: str, primed: bool = True, anti_hacking: bool = False) -> str:
    """The ReFT PoT prompt for ``question``.

    With ``primed`` the prompt ends in the program header, so the generation is the function
    body; ``anti_hacking`` appends :data:`ANTI_HACKING_SUFFIX` to the docstring (primed only).
    """
    prompt = QUESTION_PROMPT.format(question=question)
    if primed:
        prompt += program_header(question, anti_hacking)
    elif anti_hacking:
        raise ValueError("anti_hacking edits the docstring of the primed header: set primed=True")
    return prompt


#: Student prompt styles: ``"reft"`` is ReFT's question prompt followed by the primed program
#: header (the paper's); ``"header"`` is the primed header alone (the question lives in its
#: docstring; half the prompt tokens, used by the tiny default student).
PROMPT_STYLES = ("reft", "header")


def student_prompt(question: str, style: str = "reft", anti_hacking: bool = False) -> str:
    """The student's prompt in ``style`` (see :data:`PROMPT_STYLES`); it always ends in the
    program header, so the generation is the body of ``solution()``."""
    if style == "header":
        return program_header(question, anti_hacking)
    if style == "reft":
        return pot_prompt(question, primed=True, anti_hacking=anti_hacking)
    raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")


#: Written beside a saved student (``ckpt-*/policy/``): how it was prompted in training, so
#: ``evaluate`` and ``judge_quality`` prompt it the same way unless told otherwise.
PROMPT_SETTINGS_FILE = "prompt_settings.json"
#: The settings it holds and their types (token counts may be null: no limit).
PROMPT_SETTINGS = {"prompt_style": str, "anti_hacking": bool, "max_prompt_tokens": int,
                   "max_new_tokens": int}


def save_prompt_settings(directory: str | Path, prompt_style: str, anti_hacking: bool,
                         max_prompt_tokens: int | None, max_new_tokens: int | None) -> Path:
    """Write :data:`PROMPT_SETTINGS_FILE` into ``directory`` (a saved model's) and return it."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    path = Path(directory) / PROMPT_SETTINGS_FILE
    settings = {"prompt_style": prompt_style, "anti_hacking": bool(anti_hacking),
                "max_prompt_tokens": max_prompt_tokens, "max_new_tokens": max_new_tokens}
    path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return path


def load_prompt_settings(directory: str | Path) -> dict[str, Any] | None:
    """The settings a saved model was trained with, or None when ``directory`` has no
    :data:`PROMPT_SETTINGS_FILE` (a hub model, or one saved by other tools).

    Raises ValueError naming the file when it is not a JSON object of the known settings with
    the right types."""
    path = Path(directory).expanduser() / PROMPT_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(settings, dict) or set(settings) - set(PROMPT_SETTINGS):
        raise ValueError(f"{path}: expected a JSON object with keys {sorted(PROMPT_SETTINGS)}")
    for key, value in settings.items():
        kind = PROMPT_SETTINGS[key]
        ok = (value is None and kind is int) or (type(value) is kind)
        if not ok or (key == "prompt_style" and value not in PROMPT_STYLES):
            raise ValueError(f"{path}: bad {key}: {value!r}")
    return settings


def _header_end(program: str) -> int:
    """Offset just past the ``def`` line and its docstring (0 when there is no ``def`` line)."""
    if not program.lstrip().startswith("def "):
        return 0
    end = program.find("\n", program.find("def ")) + 1
    if end == 0:
        return len(program)
    rest = program[end:]
    stripped = rest.lstrip()
    for quote in ('"""', "'''"):
        if stripped.startswith(quote):
            start = end + len(rest) - len(stripped) + len(quote)
            close = program.find(quote, start)
            if close < 0:  # unterminated docstring: everything is header
                return len(program)
            line_end = program.find("\n", close + len(quote))
            return len(program) if line_end < 0 else line_end + 1
    return end


def program_body(program: str) -> str:
    """The lines after ``def solution():`` and its docstring (the part a primed model writes)."""
    return program[_header_end(program) :]


def sft_pair(
    question: str, program: str, primed: bool = True, anti_hacking: bool = False
) -> tuple[str, str]:
    """(prompt, target) for supervised warm-up: the target is what the model must generate.

    Primed: the target is the program body (its own header is replaced by the prompt's);
    unprimed: the target is the whole program. Append the EOS token to the target yourself.
    """
    prompt = pot_prompt(question, primed=primed, anti_hacking=anti_hacking)
    return prompt, program_body(program) if primed else program


def program_from_completion(completion: str, primer: str = "", stop: Sequence[str] = ()) -> str:
    """Cut a generation into the program ReFT runs.

    Args:
        completion: generated text (special tokens already decoded or stripped).
        primer: the header the prompt ended with (``program_header(q)`` for primed prompts);
            prepended unless the completion starts its own ``def``.
        stop: strings that end the generation (e.g. the EOS token's text); cut at the first.
    Returns:
        the program up to (not including) the first blank line after its header (a blank line
        inside the docstring does not cut), trailing whitespace removed.
    """
    text = completion
    for s in stop:
        if s:
            text = text.split(s, 1)[0]
    if primer and not text.lstrip().startswith("def "):
        text = primer + text
    lines = text.split("\n")
    while lines and not lines[0].strip():  # blank lines before the program are not part of it
        lines.pop(0)
    text = "\n".join(lines)
    end = _header_end(text)
    body = re.split(r"\n[ \t]*(?:\n|$)", "\n" + text[end:], maxsplit=1)[0]
    return (text[:end] + body[1:]).rstrip()


def count_program_lines(program: str) -> int:
    """Statement lines of a program's body: non-blank, non-comment lines after ``def`` and the
    docstring. ``result = 72`` / ``return result`` counts 2: the anti-hacking mask gives judge
    reward 0 below 4 lines (paper, App. B.3)."""
    body = program_body(program)
    return sum(1 for line in body.split("\n") if line.strip() and not line.strip().startswith("#"))


def _fill(template: str, **fields: str) -> str:
    """Replace ``{field}`` placeholders literally, so braces elsewhere (code, JSON) stay intact."""
    for key in fields:
        if "{" + key + "}" not in template:
            raise ValueError(f"template lacks the placeholder {{{key}}}: {template!r}")
    out = template
    for key, value in fields.items():
        out = out.replace("{" + key + "}", value)
    return out


def judge_prompt(
    question: str,
    program: str,
    template: str = DEFAULT_JUDGE_TEMPLATE,
    tokenizer: Any = None,
    chat: bool | None = None,
) -> str:
    """The judge's evaluation prompt for one (question, program) pair.

    Args:
        template: text with ``{question}`` and ``{program}`` placeholders (both required).
        tokenizer: when given and it has a chat template (or ``chat=True``), the prompt is sent
            as one user message through ``apply_chat_template`` with the generation prompt and
            ``enable_thinking=False`` (honoured by templates that read it, e.g. Qwen3, ignored by
            the others), so the judge's next token is its answer.
        chat: force (True) or skip (False) the chat template; None decides from the tokenizer.
    """
    text = _fill(template, question=question, program=program)
    has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if chat is None:
        chat = has_template
    if not chat:
        return text
    if not has_template:
        raise ValueError("chat=True needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )


def rerank_input(question: str, program: str) -> str:
    """The reranker's input text (ReFT's format)."""
    return _fill(RERANK_TEMPLATE, question=question, program=program)
