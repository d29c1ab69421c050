"""How a per-token loss becomes one number: the reductions every loss and the configuration
accept.

- ``"seq-mean-token-mean"`` (ReFT's): the mean over each sequence's valid tokens, then the mean
  over the sequences that have any (a sequence with no valid token contributes nothing).
- ``"token-mean"``: the mean over all valid tokens of the batch.

Torch-free, so the configuration checks a run's ``reduction`` before torch loads; the kernels
(``rlkd_fast.kernels``) implement both.
"""

REDUCTIONS = ("seq-mean-token-mean", "token-mean")
