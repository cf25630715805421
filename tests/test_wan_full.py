"""The real Wan2.1-T2V-1.3B code path, end to end, with RANDOM weights (no weights exist here).

The fixture writes a directory in the hub layout (`tests/wan_random.py`): the transformer and the VAE
at the FULL published configs; the text encoder at the real width (d_model 4096) but with ONE layer
instead of 24 and a 259-entry byte vocabulary instead of umt5's 256,384 (the real one is ~11 GB in
bf16); a tokenizer `AutoTokenizer` loads. The CLI then runs `encode -> info -> decode` through
`LORA_CODEC_WAN_PATH` at a tiny size (1 frame, 64x64: `--size`), each command in its own process,
so every loading, placement, fingerprint, geometry and dtype step of the real path runs.

Cost on the 2-core development machine (docs/RESULTS.md, `wan_cpu`, measured by
benchmarks/bench_wan_cpu.py, which runs the same round trip): about 80 s for the round trip plus 20 s
for the directory, 6.7 GB peak memory per command that loads the model, 3.7 GB of disk; several times
longer when other jobs share the cores. Kept lean: 2 fit steps at batch 1, 1 sampling step. Weights
are random, so nothing here is about quality."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from .wan_random import ROUNDTRIP, cli_roundtrip


@pytest.fixture(scope="session")
def random_wan_dir(tmp_path_factory):
    """The random-weight directory, written once per test session in a separate process (so this
    process never holds the 1.4B-parameter transformer)."""
    root = tmp_path_factory.mktemp("wan_random")
    proc = subprocess.run([sys.executable, "-m", "tests.wan_random", str(root)], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def roundtrip(random_wan_dir, tmp_path_factory):
    return cli_roundtrip(random_wan_dir, tmp_path_factory.mktemp("wan_cli"))


def _ok(run: dict) -> dict:
    assert run["rc"] == 0, run["stderr"][-3000:]
    return json.loads(run["stdout"].strip().splitlines()[-1])


def test_full_size_random_wan_encode_info_decode(roundtrip):
    from lora_codec import bitstream
    from lora_codec.video import read_video

    runs = roundtrip["runs"]
    for name, run in runs.items():  # shown with `pytest -s` (docs/RESULTS.md has the recorded run)
        print(f"{name}: {run['seconds']} s, peak RSS {run['peak_rss_gb']} GB")
    enc = _ok(runs["encode"])
    w, h = ROUNDTRIP["size"]
    assert enc["model"] == "wan2.1-t2v-1.3b"
    assert (enc["frames"], enc["width"], enc["height"]) == (ROUNDTRIP["frames"], w, h)
    assert enc["theta_length"] == 131072 and enc["steps"] == ROUNDTRIP["fit_steps"]
    # the CPU warning of the real model (item 7) is shown
    assert "on the CPU" in runs["encode"]["stderr"]

    info = _ok(runs["info"])
    assert info["total_bytes"] == enc["total_bytes"] and info["fingerprint"] == enc["fingerprint"]

    # a short fit at default settings (beyond steps and batch) never gives an empty adapter
    code = bitstream.read_code(roundtrip["code"].read_bytes())
    assert info["payload_bytes"] > 0 and np.count_nonzero(code.symbols) > code.symbols.size // 4

    dec = _ok(runs["decode"])
    assert dec["decode_steps"] == ROUNDTRIP["sample_steps"]
    frames = read_video(roundtrip["decoded"]).frames
    assert frames.shape == (ROUNDTRIP["frames"], h, w, 3)

    # ... and it decodes differently from the unadapted model (the same code with theta = 0)
    _ok(runs["decode_unadapted"])
    plain = read_video(roundtrip["unadapted"]).frames
    assert plain.shape == frames.shape
    diff = np.abs(frames.astype(np.float64) - plain.astype(np.float64)).mean()
    assert diff > 0.5, f"the adapted decode is the unadapted one (mean |difference| {diff:.3f} grey levels)"
