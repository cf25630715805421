"""How tests/data/v1_tiny_5f.vov and its decoded frames were made: with the code of main at 2c6678d (format
version 1, before multi-segment codes). Kept so that tests/test_segments.py can check old codes still decode."""
import sys, numpy as np
sys.path.insert(0, "/work/wt_i14"); sys.path.insert(0, "/work/wt_i14/tests")
from fractions import Fraction
from conftest import synthetic_frames
from lora_codec.video import write_video
from lora_codec.codec import EncodeSettings, encode, decode
from lora_codec.backbones import load_backbone
tiny = load_backbone("tiny")
write_video("/tmp/i14/fix.mkv", synthetic_frames(frames=5, height=40, width=56, seed=5), Fraction(12))
res = encode("/tmp/i14/fix.mkv", EncodeSettings(model="tiny", caption="old format", seed=5, fit_steps=20, sample_steps=4, size=(48, 32)), backbone=tiny)
open("tests/data/v1_tiny_5f.vov", "wb").write(res.data)
dec = decode(res.data, backbone=tiny)
np.save("tests/data/v1_tiny_5f_frames.npy", dec.frames)
print(len(res.data), dec.frames.shape, dec.fps)
