"""The offline demo: what ``python -m rlkd_fast.train`` with no arguments runs on, and nothing a
run with real models touches.

- ``synthetic``: GSM8K-style problems generated locally (the ``synthetic:N`` data sets);
- ``tiny``: a digit-splitting byte-level BPE tokenizer and small Llama-style models;
- ``checklist_judge``: the embedded judge, a tiny Llama whose weights are built to check a
  program against its question (``build_judge`` builds and checks it, ``judge_artifact``
  verifies the shipped copy); ``mistakes``: corrupted programs for testing judges;
- ``cache``: those models built on first use and cached (``student=tiny``, ``judge=tiny``).
"""
