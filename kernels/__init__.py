"""rlkd_fast.kernels: fused Triton kernels for the RL hot spots, each with a PyTorch reference.

Depends on torch and triton only, so other RL codebases can take just these ops.
"""
