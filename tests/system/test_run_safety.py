"""A run owns its output directory (a second run refuses while the first lives), and Ctrl-C during
training saves a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlkd_fast.checkpoint import load_trainer_state
from rlkd_fast.runlock import OutputDirBusy, RunLock
from rlkd_fast.train import CtrlC, main

# A default-like run (SFT, then GRPO on the verifiable reward and the tiny judge), tiny sizes.
TINY = [
    "max_train=32", "max_unlabeled=16", "max_eval=4", "sft_epochs=0.5", "sft_batch_size=8",
    "sft_target_accuracy=0",
    "rollout_batch=4", "grpo_group=2", "minibatch_size=4", "max_new_tokens=24",
    "tiny_hidden=32", "tiny_layers=1", "progress=false", "exec_workers=1",
    "prompt_style=header", "labeled=synthetic:1", "unlabeled=synthetic:1",
    "eval_dataset=synthetic:1", "stages=sft,grpo", "coef_vr=0.5", "coef_yon=0.5",
]

HOLD = ("import sys, time\nfrom rlkd_fast.runlock import RunLock\nlock = RunLock(sys.argv[1])\n"
        "print('held', flush=True)\ntime.sleep(300)\n")


def test_a_second_run_refuses_while_the_first_lives(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
        with pytest.raises(SystemExit) as info:
            main([f"output_dir={tmp_path}", *TINY, "rl_steps=1"])
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert f"error: output_dir {tmp_path} is in use by another run (pid {holder.pid} " in err
        assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'  # untouched
        with pytest.raises(OutputDirBusy):
            RunLock(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no clean-up, its lock file stays behind
        holder.wait()
    assert f"pid {holder.pid} " in (tmp_path / ".lock").read_text()
    lock = RunLock(tmp_path)  # a dead run's lock does not block
    assert f"pid {os.getpid()} " in (tmp_path / ".lock").read_text()
    with pytest.raises(OutputDirBusy):  # and it holds against others (a new descriptor)
        RunLock(tmp_path)
    lock.release()
    RunLock(tmp_path).release()


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*nothing stops a second run"):
        lock = RunLock(tmp_path)
    lock.release()


def test_first_ctrl_c_asks_the_second_ends_at_once():
    before = signal.getsignal(signal.SIGINT)
    ctrl_c = CtrlC()
    try:
        assert not ctrl_c.pressed
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # Python runs the handler at the next bytecode boundary
            if ctrl_c.pressed:
                break
            time.sleep(0.01)
        assert ctrl_c.pressed
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the kernel's: ends at once
    finally:
        ctrl_c.restore()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_ctrl_c_during_rl_saves_a_checkpoint_that_resume_continues(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    args = [f"output_dir={out}", f"cache_dir={cache}", *TINY, "rl_steps=50", "save_every=1000"]
    proc = subprocess.Popen([sys.executable, "-m", "rlkd_fast.train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and '"grpo"' in metrics.read_text():
                break  # RL has made a step
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    command = f"python -m rlkd_fast.train --config {out / 'config.json'} --resume"
    assert command in err
    ckpt = out / (out / "latest").read_text()
    assert f"interrupted: {ckpt} holds step" in err
    state = load_trainer_state(ckpt)
    saved_at = state["rl_step"]
    assert 0 < saved_at < 50 and state["sft_done"]
    # The printed command continues from the saved step (here for two more steps).
    summary = main([*command.split()[3:], f"rl_steps={saved_at + 2}"])
    assert summary["resumed_from"] == str(ckpt)
    assert summary["steps"] == saved_at + 2
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl_steps = [r["step"] for r in steps if r.get("stage") == "grpo"]
    assert rl_steps == sorted(set(rl_steps)) and len(rl_steps) == saved_at + 2
