"""The offline demo: what ``python -m rlkd_fast.train`` with no arguments runs on, and nothing a
run with real models touches.

- ``synthetic``: GSM8K-style problems generated locally (the ``synthetic:N`` data sets);
- ``tiny``: a digit-splitting byte-level BPE tokenizer and small Llama-style models;
- ``teacher``: the tiny judge, taught to answer Yes/No on correct and mistaken programs;
- ``cache``: those models built on first use and cached (``student=tiny``, ``judge=tiny``).
"""
