"""The same code decoded in two fresh processes gives identical frames."""

import os
import subprocess
import sys

import numpy as np

from .conftest import ROOT

SCRIPT = """
import sys, numpy as np
from lora_codec.codec import decode
frames = decode(open(sys.argv[1], 'rb').read()).frames
np.save(sys.argv[2], frames, allow_pickle=False)
"""


def test_decode_identical_across_processes(encoded, tmp_path):
    code = tmp_path / "c.vov"
    code.write_bytes(encoded.data)
    outs = []
    for i in range(2):
        out = tmp_path / f"frames{i}.npy"
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(code), str(out)], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(np.load(out, allow_pickle=False))
    assert outs[0].shape == (17, 64, 112, 3)
    assert np.array_equal(outs[0], outs[1])
