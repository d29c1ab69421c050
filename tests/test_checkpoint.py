"""Checkpoints survive a kill at every step of their write sequence, a full disk, and leftovers of
dead writers; the output directory's lock lets one run in at a time."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rlkd_fast import checkpoint
from rlkd_fast.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from rlkd_fast.policy import PolicyWithValue

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


@pytest.fixture(scope="module")
def policy() -> PolicyWithValue:
    cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    return PolicyWithValue(LlamaForCausalLM(cfg))


def save(root: Path, policy: PolicyWithValue, step: int, version: int) -> Path:
    return save_checkpoint(root, step, policy, {"version": version})


def resumable(root: Path) -> tuple[int, int]:
    """(step, version) of the checkpoint a resume would use; fails unless it loads whole."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = latest_checkpoint(root)
    assert path is not None, f"nothing to resume from in {sorted(os.listdir(root))}"
    state = load_trainer_state(path)
    AutoModelForCausalLM.from_pretrained(path / "policy")  # the weights are whole
    assert (path / "policy" / "value_head.pt").is_file()
    return state["step"], state["version"]


# The calls that change the disk (and the flushes that order them): a kill is injected at each.
KILL_POINTS = [(os, "replace"), (os, "rename"), (os, "mkdir"), (os, "fsync"), (os, "unlink"),
               (shutil, "rmtree"), (torch, "save")]


def count_calls(action) -> int:
    calls = [0]
    real = {(m, n): getattr(m, n) for m, n in KILL_POINTS}

    def counting(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)
        return wrapper

    try:
        for (module, name), fn in real.items():
            setattr(module, name, counting(fn))
        action()
    finally:
        for (module, name), fn in real.items():
            setattr(module, name, fn)
    return calls[0]


def run_killed_at(k: int, action) -> bool:
    """Run ``action`` in a forked child that dies (os._exit, no clean-up) at the k-th call of a
    kill point; True when the child got that far."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            calls = [0]

            def killing(fn):
                def wrapper(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == k:
                        os._exit(9)
                    return fn(*args, **kwargs)
                return wrapper

            for module, name in KILL_POINTS:
                setattr(module, name, killing(getattr(module, name)))
            action()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 9


@pytest.mark.parametrize("new_step", [4, 6], ids=["resave-same-step", "save-next-step"])
def test_a_kill_at_any_point_of_a_save_leaves_a_resumable_checkpoint(tmp_path, policy, new_step):
    """ckpt-2 and ckpt-4 exist (latest: 4); a save of step ``new_step`` (re-saving step 4 as
    after the first evaluation, or a new step 6 that prunes step 2) is killed at each call that
    changes the disk in turn. Resume then finds a whole checkpoint, of the newest step that
    ``latest`` had committed to, and the next save leaves no debris behind."""
    def prepare(root: Path) -> None:
        save(root, policy, 2, version=1)
        save(root, policy, 4, version=1)

    prepare(tmp_path / "count")
    total = count_calls(lambda: save(tmp_path / "count", policy, new_step, version=2))
    assert total >= 8
    outcomes = set()
    for k in range(1, total + 1):
        root = tmp_path / f"k{k}"
        prepare(root)
        assert run_killed_at(k, lambda root=root: save(root, policy, new_step, version=2))
        committed = (root / "latest").read_text()
        step, version = resumable(root)
        if new_step == 4:  # the old or the new copy of step 4, never less
            assert step == 4, f"kill at call {k}"
        elif committed == "ckpt-0000006":
            assert (step, version) == (6, 2), f"kill at call {k}"
        else:
            assert (committed, step) == ("ckpt-0000004", 4), f"kill at call {k}"
        outcomes.add((step, version))
        save(root, policy, 8, version=3)  # the run goes on; the next save cleans up
        names = sorted(p.name for p in root.iterdir())  # no hidden debris, keep=2 held
        assert names[0] in ("ckpt-0000004", "ckpt-0000006"), (k, names)
        assert names[1:] == ["ckpt-0000008", "latest"], (k, names)
        assert resumable(root) == (8, 3)
        shutil.rmtree(root)
    # The kills covered both sides of the commit.
    assert (new_step, 2) in outcomes and (4, 1) in outcomes


def test_the_injected_kill_fires_only_inside_the_save(tmp_path, policy):
    """The injected kill fires (a k past the last call means the save finished)."""
    total = count_calls(lambda: save(tmp_path / "a", policy, 2, version=1))
    assert not run_killed_at(total + 1, lambda: save(tmp_path / "b", policy, 2, version=1))
    assert resumable(tmp_path / "b") == (2, 1)


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, policy):
    save(tmp_path, policy, 2, version=1)
    save(tmp_path, policy, 4, version=1)
    (tmp_path / "ckpt-0000004" / "trainer_state.pt").unlink()  # damaged after the fact
    with pytest.warns(UserWarning, match=r"ckpt-0000004, which is missing or incomplete.*"
                                         r"newest complete checkpoint.*ckpt-0000002"):
        path = latest_checkpoint(tmp_path)
    assert path == tmp_path / "ckpt-0000002"
    (tmp_path / "latest").write_text("ckpt-0000009")  # names one that was never written
    with pytest.warns(UserWarning, match="ckpt-0000009"):
        assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-0000002"
    assert latest_checkpoint(tmp_path / "fresh") is None


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_half_written_copies_of_dead_runs_are_removed(tmp_path, policy):
    """Leftovers of a killed writer (pid gone) go at the next save, and at resume; a live
    writer's temporary directory stays."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = dead_pid()
        stale = [tmp_path / f".tmp-ckpt-0000003-{dead}", tmp_path / f".old-ckpt-0000001-{dead}",
                 tmp_path / f".del-ckpt-0000000-{dead}"]
        mine_then = tmp_path / f".tmp-ckpt-0000005-{os.getpid()}"  # a restart reused our pid
        busy = tmp_path / f".tmp-ckpt-0000003-{live.pid}"
        for d in [*stale, mine_then, busy]:
            (d / "policy").mkdir(parents=True)
            (d / "policy" / "model.safetensors").write_bytes(b"x" * 1000)
        os.utime(mine_then, (0, 0))
        save(tmp_path, policy, 4, version=1)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [busy.name, "ckpt-0000004", "latest"])
        dead_again = tmp_path / f".tmp-ckpt-0000006-{dead}"
        dead_again.mkdir()
        (tmp_path / "latest").write_text("ckpt-0000004")
        assert resumable(tmp_path) == (4, 1)
        assert not dead_again.exists() and busy.exists()
    finally:
        live.kill()
        live.wait()


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["torch.save", "save_pretrained", "safetensors",
                                   "unexpected pos"])
def test_a_full_disk_is_reported_and_cleaned_up(tmp_path, policy, monkeypatch, where):
    save(tmp_path, policy, 2, version=1)
    if where == "torch.save":
        monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    elif where == "save_pretrained":
        monkeypatch.setattr(policy.lm, "save_pretrained", full_disk)
    elif where == "safetensors":  # its own exception type, with the OS error as text
        def safetensors_full(*args, **kwargs):
            raise Exception("Error while serializing: I/O error: No space left on device "
                            "(os error 28)")

        monkeypatch.setattr(policy.lm, "save_pretrained", safetensors_full)
    else:  # torch writing to a path reports a full disk as RuntimeError("... unexpected pos")
        def torch_full(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7 vs 5")

        real_statvfs = os.statvfs

        def statvfs(path):
            st = real_statvfs(path)
            return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, *st[5:]))

        monkeypatch.setattr(checkpoint.torch, "save", torch_full)
        monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(OSError, match="no space left on device") as info:
        save(tmp_path, policy, 4, version=2)
    assert info.value.errno == errno.ENOSPC
    assert "ckpt-0000004" in str(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000002", "latest"]
    assert resumable(tmp_path) == (2, 1)


def test_other_errors_are_not_called_a_full_disk(tmp_path, policy, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(RuntimeError, match="some other failure"):
        save(tmp_path, policy, 4, version=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
