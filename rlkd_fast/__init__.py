"""rlkd_fast: RL-based knowledge distillation with an LLM judge, made fast.

Subpackages: ``kernels`` (fused Triton ops for the RL math and the judge reward, importable on
their own), ``data`` (the problem records and the data sets' loaders), ``demo`` (the offline
default's synthetic problems and tiny models), ``configs`` (the paper's runs as YAML).

Modules: ``executor`` (the sandboxed C++ program runner) and ``pot`` (how programs are run),
``rewards`` (the verifiable reward), ``judges`` (YoN judge, reranker, log-likelihood),
``prompts``, ``models``, ``policy`` (the student with its value head), ``rollout`` (generation),
``ppo`` (advantages and losses of PPO and GRPO), ``reductions``, ``sft``, ``run_inputs`` (what a
run loads), ``hub`` (local paths and hub ids), ``checkpoint``, ``atomic`` and ``runlock``
(resumable checkpoints, one run per directory), ``metrics``, ``config``, ``train`` (the main
job), ``evaluate`` and ``judge_quality`` (command-line evaluations). The method:
``docs/method.md``.
"""

__version__ = "0.1.0"
