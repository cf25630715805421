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


WRITE = """
import sys
from lora_codec.codec import decode
from lora_codec.video import write_video
result = decode(open(sys.argv[1], 'rb').read())
for out in sys.argv[2:]:
    write_video(out, result.frames, result.fps)
"""


def test_decoded_files_byte_identical_across_processes(encoded, tmp_path):
    """The files decoding writes (H.264 mp4, FFV1 mkv) are byte-identical across two processes: the encoders
    run with one thread (their output does not depend on how work is split between threads) and bitexact
    muxing (no random Matroska segment UID). Before: decoded frames of two such mp4 differed by up to 18."""
    code = tmp_path / "c.vov"
    code.write_bytes(encoded.data)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    outs = []
    for i in range(2):
        outs.append([tmp_path / f"out{i}.mp4", tmp_path / f"out{i}.mkv"])
        r = subprocess.run([sys.executable, "-c", WRITE, str(code), *map(str, outs[-1])], capture_output=True,
                           text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    for a, b in zip(*outs):
        assert a.read_bytes() == b.read_bytes(), a.suffix


HEAP = """
import sys, hashlib, numpy as np, av
from lora_codec.video import write_video
from tests.conftest import synthetic_frames
frames = synthetic_frames(5, 480, 832)
rng = np.random.default_rng(int(sys.argv[1]))  # leave different bytes on the heap in each process
junk = [av.VideoFrame.from_ndarray(rng.integers(0, 256, (480, 832, 3), dtype=np.uint8), format="rgb24")
        .reformat(format="yuv420p") for _ in range(40)]
del junk
write_video(sys.argv[2], frames, 16)
"""


def test_writer_ignores_what_the_heap_held(tmp_path):
    """The H.264 writer's bytes do not depend on leftover memory. x264's mbtree reads memory it never wrote:
    with it, these three processes wrote three different files (832x480; measured); the writer turns it off."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    blobs = set()
    for seed in range(3):
        out = tmp_path / f"w{seed}.mp4"
        r = subprocess.run([sys.executable, "-c", HEAP, str(seed), str(out)], capture_output=True, text=True,
                           env=env, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        blobs.add(out.read_bytes())
    assert len(blobs) == 1
