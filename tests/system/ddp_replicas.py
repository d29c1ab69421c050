"""Run under ``torchrun --nproc_per_node 2``: a tiny SFT + one PPO step with DDP (gloo), then
each rank writes its parameters, so the test can check the replicas stayed identical."""

import sys
from pathlib import Path

import torch

from rlkd_fast.config import load_config
from rlkd_fast.train import Trainer

out, cache, *overrides = sys.argv[1:]
cfg = load_config(None, [f"output_dir={out}", f"cache_dir={cache}", *overrides])
trainer = Trainer(cfg)
rank = trainer.acc.process_index
before = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
trainer.run()
after = trainer.policy.state_dict()
torch.save({"before": before, "after": {k: v.detach().clone() for k, v in after.items()},
            "world": trainer.acc.num_processes},
           Path(out) / f"replica{rank}.pt")
