from transformers import AutoModelForCausalLM, AutoTokenizer

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.demo.tiny import JUDGE_WORDS, tiny_causal_lm, train_tokenizer

PROGRAM = (
    'def solution():\n    """Ann has 12 pens."""\n'
    "    pens = 12\n    result = pens\n    return result\n"
)


def test_tokenizer_round_trip_splits_digits_and_keeps_judge_words(tmp_path):
    tok = train_tokenizer([PROGRAM] * 20, vocab_size=300)
    ids = tok(PROGRAM, add_special_tokens=False).input_ids
    assert tok.decode(ids) == PROGRAM
    assert "12" not in tok.convert_ids_to_tokens(ids)  # digits are single tokens
    for word in JUDGE_WORDS:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word


def test_tiny_model_loads_through_from_pretrained(tmp_path):
    tok = train_tokenizer([PROGRAM] * 20, vocab_size=300)
    model = tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2)
    save_atomic(model, tok, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2.decode(tok2(PROGRAM, add_special_tokens=False).input_ids) == PROGRAM
    assert loaded.config.vocab_size == len(tok)
    assert tok2.pad_token_id is not None and tok2.eos_token_id is not None
