"""Long clips coded as segments (lora_codec/segments.py) on the `small` backbone, on this CPU; prints JSON.

    python benchmarks/bench_long_clip.py [--quick] [--backbone small|tiny]

Clips longer than small's native 9 frames (128x80): the two held-out evaluation clips (17 frames, 2
segments) and the 2-second example (33 frames, 4 segments; the film's first seconds are part of small's
training material, so its quality is flattering: labelled). Per clip and `--overlap` setting, the
default encode (every frame, one fit per segment, 600 steps each), then the decode, measured against
the clip at the coded geometry:

* size: bytes, bytes per second, bits per pixel, and the one-segment reference (the clip's first 9
  frames coded alone: bytes per second of an ordinary code);
* quality: PSNR / MS-SSIM over every frame;
* seams (`segments.seam_report`): PSNR of the frames on either side of each junction vs the frames inside
  the segments, and the mean frame-to-frame change at junctions vs inside, with the source's;
* the same segments joined with a hard cut instead of the decoder's blend (each shared frame from the
  segment it is deeper in), to show what the blending does;
* fit seconds per segment (wall-clock; `benchmarks/run.py` records the machine's load).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILM = "a cartoon animation: a big grey rabbit in a green meadow with trees"
CLIPS = {
    "film, held out (4.0-5.0 s)": (ROOT / "examples" / "bigbuckbunny_eval.mp4", FILM, False),
    "photo pan, unseen photograph": (ROOT / "examples" / "coffee_pan.mp4", "a photo of a cup of coffee on a saucer",
                                     False),
    "film, first 2 s (training material)": (ROOT / "examples" / "bigbuckbunny_2s.mp4", FILM, True),
}
OVERLAPS = (1, 4)


def hard_cut(starts, seg_frames: int, pieces: dict) -> np.ndarray:
    """The decoded segments joined without blending: each frame from the segment it is deepest in (ties:
    the later segment)."""
    first, last = starts[0], starts[-1] + seg_frames
    out = []
    for t in range(first, last):
        cover = [i for i in pieces if starts[i] <= t < starts[i] + seg_frames]
        best = max(cover, key=lambda i: (min(t - starts[i] + 1, starts[i] + seg_frames - t), i))
        out.append(pieces[best][t - starts[best]])
    return np.stack(out)


def quality(ref, frames) -> dict:
    from lora_codec.metrics import ms_ssim, psnr

    return {"psnr_rgb": round(psnr(ref, frames), 2), "ms_ssim": round(ms_ssim(ref, frames), 4)}


def _round(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def measure(bb, path: Path, caption: str, overlap: int, steps: int | None) -> dict:
    from lora_codec import segments
    from lora_codec.codec import EncodeSettings, decode

    # measure=False: this benchmark decodes each segment itself (to join them both ways)
    settings = EncodeSettings(model=bb.name, caption=caption, fit_steps=steps, measure=False)
    t0 = time.perf_counter()
    res = segments.encode(path, settings, segments.SegmentSettings(overlap=overlap), backbone=bb)
    encode_s = time.perf_counter() - t0
    code = res.code
    starts = [s.start for s in code.segment_list]
    pieces = {}
    t0 = time.perf_counter()
    for i in range(code.n_segments):  # each segment alone, then joined both ways
        pieces[i] = decode(res.data, backbone=bb, segments=str(i + 1)).frames
    decode_s = time.perf_counter() - t0
    blended, _ = segments.blend_segments(starts, code.frames, pieces)
    cut = hard_cut(starts, code.frames, pieces)
    rep = res.report
    return {
        "overlap": overlap, "segments": code.n_segments, "segment_starts": starts, "frames": code.output_frames,
        "seconds_of_video": round(rep["seconds"], 3), "bytes": len(res.data),
        "bytes_per_second": round(len(res.data) / rep["seconds"], 1), "bits_per_pixel": round(rep["bits_per_pixel"], 5),
        "shared_prior": rep.get("shared_prior"), "prior_bytes": rep["prior_bytes"],
        "header_bytes": rep["header_bytes"], "segment_table_bytes": rep["segment_table_bytes"],
        "fit_steps_per_segment": rep["segment_reports"][0]["steps"],
        "fit_seconds_per_segment": [r["fit_seconds"] for r in rep["segment_reports"]],
        "encode_seconds": round(encode_s, 1), "decode_seconds": round(decode_s, 1),
        "blended": {**quality(res.frames, blended),
                    **_round(segments.seam_report(res.frames, blended, starts, code.frames))},
        "hard_cut": {**quality(res.frames, cut), **_round(segments.seam_report(res.frames, cut, starts, code.frames))},
    }


def one_segment(bb, path: Path, caption: str, steps: int | None) -> dict:
    """The clip's first native-length frames coded alone: an ordinary one-segment code."""
    from lora_codec.codec import EncodeSettings, decode, encode

    res = encode(path, EncodeSettings(model=bb.name, caption=caption, fit_steps=steps), backbone=bb)
    seconds = res.report["seconds"]
    return {"frames": res.code.frames, "bytes": len(res.data), "bytes_per_second": round(len(res.data) / seconds, 1),
            **quality(res.frames, res.decoded.frames)}  # the encoder's own receiver decode


def run(quick: bool = False, backbone: str = "small") -> dict:
    from lora_codec.backbones import load_backbone

    bb = load_backbone(backbone)
    steps = 60 if quick else None  # None: the backbone's default fit
    out = {"backbone": bb.name + (" (NO visual knowledge: quality not meaningful)" if bb.is_tiny else ""),
           "device": "cpu" if bb.device.type == "cpu" else bb.device.type, "native_frames": bb.native.frames,
           "fit_steps": steps or (bb.defaults.stage1_steps + bb.defaults.stage2_steps), "default_fit": steps is None,
           "clips": {}}
    for name, (path, caption, training) in CLIPS.items():
        overlaps = OVERLAPS if not training and not quick else OVERLAPS[:1]
        c = {"clip": str(path.relative_to(ROOT)), "training_material": training,
             "one_segment": one_segment(bb, path, caption, steps), "runs": []}
        for ov in overlaps:
            print(f"[long_clip] {name}: overlap {ov}", file=sys.stderr, flush=True)
            c["runs"].append(measure(bb, path, caption, ov, steps))
        out["clips"][name] = c
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 fit steps per segment, one overlap")
    ap.add_argument("--backbone", default="small")
    a = ap.parse_args()
    import datetime
    import os

    before = [round(x, 2) for x in os.getloadavg()]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out = run(quick=a.quick, backbone=a.backbone)
    out["run"] = {"command": "python " + " ".join(["benchmarks/bench_long_clip.py", *sys.argv[1:]]),
                  "date_utc": started, "loadavg_before": before,
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
