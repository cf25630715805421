"""A picture to look at: original | `small` reconstruction | x265 at the same number of bytes.

    python scripts/side_by_side.py [--out docs/small_side_by_side.png] [--frames 0,4,8]

Encodes each evaluation clip in `examples/` with the `small` backbone's defaults (as
`python -m lora_codec encode` does), decodes it as a receiver would, codes the same frames with x265
(PyAV) at the code's size, and stacks the chosen frames of the three, labelled with bytes and PSNR,
scaled up 3x (nearest neighbour, so pixels stay visible).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pad = np.full((18, img.shape[1], 3), 255, np.uint8)
    out = Image.fromarray(np.concatenate([pad, img], 0))
    ImageDraw.Draw(out).text((4, 3), text, fill=(0, 0, 0))
    return np.asarray(out)


def main() -> None:
    from PIL import Image

    from bench_small import EVAL_CLIPS
    from lora_codec.backbones import SMALL_NAME, load_backbone
    from lora_codec.baselines import encode_at_budget
    from lora_codec.codec import EncodeSettings, decode, encode
    from lora_codec.metrics import psnr

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "small_side_by_side.png"))
    ap.add_argument("--frames", default="0,4,8")
    args = ap.parse_args()
    idx = [int(i) for i in args.frames.split(",")]
    bb = load_backbone(SMALL_NAME)
    blocks = []
    for name, (path, caption) in EVAL_CLIPS.items():
        res = encode(path, EncodeSettings(model=SMALL_NAME, caption=caption), backbone=bb)
        ours = decode(res.data, backbone=bb).frames
        x265 = encode_at_budget(res.frames, res.code.fps_num / res.code.fps_den, "x265", len(res.data))
        cols = [("original (as coded)", res.frames),
                (f"small: {len(res.data)} B, {psnr(res.frames, ours):.1f} dB", ours),
                (f"x265: {x265.bytes} B, {psnr(res.frames, x265.frames):.1f} dB", x265.frames)]
        rows = [np.concatenate([f[i] for _t, f in cols], 1) for i in idx]
        big = np.concatenate(rows, 0).repeat(3, 0).repeat(3, 1)
        heads = np.concatenate([label(np.zeros((0, big.shape[1] // 3, 3), np.uint8), t) for t, _f in cols], 1)
        blocks.append(label(np.concatenate([heads, big], 0), f"{name}: frames {args.frames}"))
        print(f"{name}: code {len(res.data)} B, PSNR small {psnr(res.frames, ours):.2f} dB, "
              f"x265 {x265.bytes} B (fits {x265.fits}) {psnr(res.frames, x265.frames):.2f} dB")
    Image.fromarray(np.concatenate(blocks, 0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
