"""Prompt builders and program helpers of rlkd_fast.prompts."""

from __future__ import annotations

import pytest

from rlkd_fast.prompts import (
    ANTI_HACKING_SUFFIX,
    DEFAULT_JUDGE_TEMPLATE,
    count_program_lines,
    judge_prompt,
    pot_prompt,
    program_body,
    program_from_completion,
    program_header,
    rerank_input,
    sft_pair,
)

Q = "Tom has 3 apples and buys 5 more. How many apples does he have?"
BODY = "    a = 3\n    b = 5\n    total = a + b\n    result = total\n    return result"
PROGRAM = f'def solution():\n    """{Q}"""\n{BODY}'


def run(program: str) -> float:
    scope: dict = {}
    exec(program, scope)
    return scope["solution"]()


def test_pot_prompt_is_refts_format():
    assert pot_prompt(Q, primed=False) == f"Question:\n{Q}\nAnswer reasoning:\n"
    header = f'def solution():\n    """{Q}"""\n'
    assert program_header(Q) == header
    assert pot_prompt(Q) == f"Question:\n{Q}\nAnswer reasoning:\n{header}"
    hacked = pot_prompt(Q, anti_hacking=True)
    assert hacked.endswith(f'"""{Q} {ANTI_HACKING_SUFFIX}"""\n')
    assert ANTI_HACKING_SUFFIX.startswith("Please provide full reasoning")
    with pytest.raises(ValueError, match="primed"):
        pot_prompt(Q, primed=False, anti_hacking=True)


def test_sft_pair_rebuilds_the_program():
    assert program_body(PROGRAM) == BODY and program_body(BODY) == BODY
    prompt, target = sft_pair(Q, PROGRAM)
    assert target == BODY and prompt.endswith(program_header(Q))
    program = program_from_completion(target + "<eos>junk", program_header(Q), stop=["<eos>"])
    assert program == PROGRAM and run(program) == 8
    prompt, target = sft_pair(Q, PROGRAM, primed=False)
    assert target == PROGRAM and prompt.endswith("Answer reasoning:\n")
    _, target = sft_pair(Q, PROGRAM, anti_hacking=True)
    assert target == BODY


def test_program_from_completion_cuts_at_the_first_blank_line():
    primer = program_header(Q)
    gen = BODY + "\n\nprint(solution())\n    more = 1\n"
    assert program_from_completion(gen, primer) == PROGRAM
    # a whitespace-only line is blank too; trailing spaces go
    assert program_from_completion(BODY + "   \n    \n    x = 1", primer) == PROGRAM
    # a completion that writes its own def is not primed twice
    assert program_from_completion("\n" + PROGRAM + "\n\nQuestion:", primer) == PROGRAM
    # stop strings cut before the blank-line rule
    assert program_from_completion("    result = 1</s>\n    return result", primer, ["</s>"]) == (
        primer + "    result = 1"
    )
    assert program_from_completion("", primer) == primer.rstrip()
    # a blank line inside the docstring does not cut; one right after the header does (ReFT)
    two = program_header("Line one.\n\nLine two?")
    assert program_from_completion(BODY + "\n\n    x = 1", two) == two + BODY
    assert run(program_from_completion(BODY, two)) == 8
    assert program_from_completion("\n" + BODY, primer) == primer.rstrip()
    assert program_from_completion("no program at all") == "no program at all"


def test_count_program_lines():
    assert count_program_lines(PROGRAM) == 5
    hack = f'def solution():\n    """{Q}"""\n    result = 8\n    return result'
    assert count_program_lines(hack) == 2
    # multi-line docstring, single quotes, comments and blank lines are not statements
    multi = (
        "def solution():\n    '''line one\n    line two'''\n    # think\n\n    x = 1\n    return x"
    )
    assert count_program_lines(multi) == 2
    assert count_program_lines("def solution():\n    return 4") == 1
    assert count_program_lines("    a = 1\n    return a") == 2  # a bare body
    assert count_program_lines('def solution():\n    """never closed\n    a = 1') == 0
    assert count_program_lines("") == 0
    # counted on a cut completion, the anti-hacking mask sees what runs
    assert (
        count_program_lines(program_from_completion(BODY + "\n\n    x = 1", program_header(Q))) == 5
    )


def test_judge_prompt_default_and_custom_templates():
    text = judge_prompt(Q, PROGRAM)
    assert text == DEFAULT_JUDGE_TEMPLATE.replace("{question}", Q).replace("{program}", PROGRAM)
    assert text.startswith(f"Question: {Q}\nProposed solution:\n{PROGRAM}\nIs the above")
    assert text.endswith("Answer with Yes or No.\nAnswer:")
    code = "def solution():\n    d = {'k': 1}\n    return d['k']"  # braces must survive
    assert judge_prompt("q", code, template="<{question}|{program}>") == f"<q|{code}>"
    with pytest.raises(ValueError, match="program"):
        judge_prompt("q", "p", template="only {question}")
    assert rerank_input(Q, PROGRAM) == f"Question:\n{Q}\nAnswer reasoning:\n{PROGRAM}"


def chat_tokenizer(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "Yes": 1, "No": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = template
    return fast


THINKING_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
    "{% endif %}"
)


def test_judge_prompt_applies_the_chat_template_without_thinking():
    text = judge_prompt(Q, PROGRAM, tokenizer=chat_tokenizer(THINKING_TEMPLATE))
    plain = judge_prompt(Q, PROGRAM)
    assert text == f"<|user|>{plain}<|end|><|assistant|><think></think>"
    # a template that ignores enable_thinking still renders
    simple = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    assert judge_prompt("q", "p", tokenizer=chat_tokenizer(simple)) == (
        "[" + judge_prompt("q", "p") + "]"
    )
    assert (
        judge_prompt(Q, PROGRAM, tokenizer=chat_tokenizer(THINKING_TEMPLATE), chat=False) == plain
    )
    assert judge_prompt(Q, PROGRAM, tokenizer=chat_tokenizer(None)) == plain
    with pytest.raises(ValueError, match="chat template"):
        judge_prompt(Q, PROGRAM, tokenizer=chat_tokenizer(None), chat=True)
