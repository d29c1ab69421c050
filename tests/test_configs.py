"""The shipped paper configs carry the paper's training lengths (App. C.2, training steps)."""

import pytest

from rlkd_fast.config import SHIPPED, load_config

# [paper, App. C.2] optimizer steps: Galactica-125M on GSM8K 100,000, CodeGen-350M on GSM8K
# 50,000, every SVAMP run 50,000 (Galactica-6.7B: 15,000, no shipped config)
PAPER_STEPS = {("facebook/galactica-125m", "gsm8k"): 100_000,
               ("Salesforce/codegen-350M-mono", "gsm8k"): 50_000,
               ("facebook/galactica-125m", "svamp"): 50_000}
NAMES = sorted(p.stem for p in SHIPPED.glob("*.yaml") if p.stem != "paper_base")


@pytest.mark.parametrize("name", NAMES)
def test_rl_steps_are_the_papers(name):
    cfg = load_config(name)
    dataset = "svamp" if "svamp" in cfg.labeled_source else "gsm8k"
    assert cfg.rl_steps == PAPER_STEPS[cfg.student, dataset], name


def test_no_step_count_is_marked_assumed():
    for path in SHIPPED.glob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.startswith("rl_steps:"):
                assert "[assumed]" not in line and "App. C.2" in line, (path.name, line)
