"""rlkd_fast: RL-based knowledge distillation with an LLM judge, made fast.

Subpackages: ``kernels`` (Triton ops), ``executor`` (sandboxed C++ program runner),
``rewards``, ``data``, ``judges``, ``train``, ``evaluate``.
"""

__version__ = "0.1.0"
