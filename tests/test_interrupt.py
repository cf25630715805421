"""Interruption: kill an encode mid-fit (SIGKILL, no chance to clean up), resume from its periodic
state file -> the same code as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

from .conftest import ROOT

# 200 steps: long enough that the kill lands mid-fit even on an idle machine (a tiny step takes ~20 ms)
STEPS = 200
ARGS = ["--model", "tiny", "--steps", str(STEPS), "--sample-steps", "3", "--seed", "4", "--json", "-q"]


def _cmd(*args):
    return [sys.executable, "-m", "lora_codec", *map(str, args)]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))


def test_killed_encode_resumes_to_the_same_code(clip_path, tmp_path):
    full = tmp_path / "full.vov"
    r = subprocess.run(_cmd("encode", clip_path, "-o", full, *ARGS), capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "full.vov.state").exists()  # checkpoint removed once the code is written

    out = tmp_path / "killed.vov"
    state = tmp_path / "killed.vov.state"
    proc = subprocess.Popen(_cmd("encode", clip_path, "-o", out, *ARGS, "--checkpoint-every", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.05)  # a little further than the first checkpoint, well before the end of the fit
    assert proc.poll() is None, "the encode finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert state.exists() and not out.exists()

    r = subprocess.run(_cmd("encode", clip_path, "-o", out, *ARGS, "--resume", state), capture_output=True,
                       text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["steps"] == STEPS
    assert out.read_bytes() == full.read_bytes()
