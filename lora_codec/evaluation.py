"""Rate-distortion comparison of codes against classic codecs: `python -m lora_codec compare`.

For a clip and one or more of its codes:

1. read the clip and convert it to the code's coded geometry exactly as the encoder did
   (`video.read_video` from `--start`, the backbone's `coded_geometry`, `video.fit_to_geometry`);
   codes do not store the start time, so the clip is compared from its start unless `--start` is given;
2. decode each code (`codec.decode`) and measure it against that reference (`metrics.evaluate`:
   PSNR RGB / Y, MS-SSIM, LPIPS / DISTS only when their weights are on this machine);
3. code the same reference frames with each classic codec (`baselines.encode_at_budget`: the best
   CRF whose mp4 fits) at each code's size and at a few budgets around it (`--curve`), and measure those;
4. print a table (or `--json`) and optionally draw the R-D curves (`--plot`, matplotlib).

A long clip's code (several segments) is compared over every frame it codes, and its row also gets
the seam measurements (`segments.seam_report`). A one-frame code of a still picture is compared with
still-image codecs at equal bytes (JPEG, WebP, AVIF through Pillow, those its build has) by default.

Sizes are whole files on both sides: the code file, and the mp4 a user would send (container included).
Every user error is an `EvaluationError` (or another `LoraCodecError`) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import LoraCodecError
from .units import kbit_per_second

__all__ = ["EvaluationError", "Reference", "coded_reference", "compare", "format_table", "plot_rd", "add_commands"]

DEFAULT_CODECS = ("x264", "x265", "av1")
DEFAULT_CURVE = (0.5, 0.71, 1.41, 2.0)
TINY_NOTE = ("backbone 'tiny' has no visual knowledge: its reconstructions are not meaningful, so the code's "
             "quality numbers test the plumbing only, not the method")
START_NOTE = ("codes do not store the start time: the clip was compared from {start:g} s "
              "(pass --start if the encode used another)")


class EvaluationError(LoraCodecError):
    """A comparison cannot be made (clip and code do not match, bad options, missing plotting package)."""


@dataclasses.dataclass
class Reference:
    """The clip as the encoder coded it."""

    frames: np.ndarray  # uint8 [T, H, W, 3] at the code's geometry
    fps: Fraction
    notes: list[str]


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # identical frames: PSNR is +inf
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return _json_safe(float(v))
    if isinstance(v, Path):
        return str(v)
    return v


def dumps(obj: Any, **kw) -> str:
    """JSON with +-inf / nan as null (strict JSON)."""
    return json.dumps(_json_safe(obj), allow_nan=False, **kw)


def coded_reference(video, code, backbone, *, start_seconds: float = 0.0, limits=None) -> Reference:
    """Read `video` (path or `video.Clip`) and convert it to `code`'s geometry the way
    `EncodeSession.start` does; EvaluationError when the clip cannot have produced the code."""
    from .stills import read_input
    from .video import Clip, Limits, fit_to_geometry

    if isinstance(video, Clip):
        clip = video
    else:  # every frame the code holds (a long clip's code: all its segments); a picture through Pillow
        clip = read_input(video, start_seconds=start_seconds, max_frames=code.output_frames,
                          limits=limits or Limits())
    T, H, W = clip.frames.shape[:3]
    # a backbone that codes free sizes codes this clip at the code's size (the encoder's --size)
    geom = backbone.coded_geometry(T, H, W, size=(code.width, code.height) if backbone.free_size else None)
    if (geom.height, geom.width) != (code.height, code.width) or T < code.output_frames:
        raise EvaluationError(
            f"the clip ({W}x{H}, {T} frames, coded as {geom.width}x{geom.height}) cannot be the source of this code "
            f"({code.width}x{code.height}, {code.output_frames} frames)")
    notes = list(clip.notes)
    if (code.src_width, code.src_height) != (W, H):
        raise EvaluationError(
            f"the clip ({W}x{H}) cannot be the source of this code: it was made from a "
            f"{code.src_width}x{code.src_height} source")
    if code.src_frames != T:
        notes.append(f"the code's source had {code.src_frames} frames from its start point, this reading {T}: "
                     "check --start")
    frames = fit_to_geometry(clip.frames, code.output_frames, code.height, code.width)
    return Reference(frames=frames, fps=Fraction(code.fps_num, code.fps_den), notes=notes)


def parse_codecs(text: str | list[str] | tuple[str, ...]) -> list[str]:
    from .baselines import CODECS
    from .stills import STILL_CODECS

    names = text.split(",") if isinstance(text, str) else list(text)
    known = {**{s: full for s, full in CODECS.items()}, **{s: s for s in STILL_CODECS}, "jpg": "jpeg"}
    out = []
    for n in (x.strip().lower() for x in names):
        if not n:
            continue
        short = "jpeg" if n == "jpg" else next((s for s, full in known.items() if n in (s, full)), None)
        if short is None:
            raise EvaluationError(f"unknown codec '{n}' in --codecs; choose from {', '.join(CODECS)} (videos) or "
                                  f"{', '.join(STILL_CODECS)} (still pictures)")
        if short not in out:
            out.append(short)
    return out


def parse_curve(text: str | list[float] | tuple[float, ...] | None) -> list[float]:
    if text is None:
        return []
    if isinstance(text, str):
        text = text.strip()
        if text in ("", "none"):
            return []
        try:
            vals = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise EvaluationError(f"--curve must be comma-separated numbers (factors of the code's size), got '{text}'") from None
    else:
        vals = [float(x) for x in text]
    for v in vals:
        if not (math.isfinite(v) and 0.01 <= v <= 100):
            raise EvaluationError(f"--curve factors must be in 0.01..100, got {v:g}")
    return sorted(set(vals))


def _quality(ref: np.ndarray, rec: np.ndarray, perceptual: bool) -> dict:
    from .metrics import evaluate, ms_ssim, psnr

    if perceptual:
        q = evaluate(ref, rec)
    else:
        notes: list[str] = []
        q = {"psnr_rgb": psnr(ref, rec), "psnr_y": psnr(ref, rec, channel="y"), "ms_ssim": ms_ssim(ref, rec, notes=notes),
             "lpips": None, "dists": None, "unavailable": "perceptual metrics not requested", "notes": notes}
    return q


def compare(video, codes: list[bytes], *, codecs=None, curve=DEFAULT_CURVE, start_seconds: float = 0.0,
            decode_steps: int | None = None, backbone=None, code_names: list[str] | None = None,
            perceptual: bool = True, progress: Callable[[str], None] | None = None, limits=None) -> dict:
    """Decode `codes` (binary or text forms of codes of `video`), code the clip with each classic
    codec at each code's size and at `curve` factors of it, and measure everything against the clip
    at the coded geometry. Returns {'rows': [...], ...} (see the module docstring). `codecs` None:
    x264, x265 and AV1, or for a one-frame code the still-image codecs Pillow has (JPEG, WebP, AVIF)."""
    from . import bitstream, codec
    from .backbones import load_backbone
    from .baselines import available_codecs, encode_at_budget
    from .segments import seam_report
    from .stills import STILL_CODECS, available_still_codecs, encode_still_at_budget

    say = progress or (lambda msg: None)
    curve = parse_curve(curve)
    if not codes:
        raise EvaluationError("give at least one code")
    raws = [bitstream.load_code_bytes(c) for c in codes]
    parsed = [bitstream.read_code(r) for r in raws]
    names = list(code_names) if code_names else [f"code {i + 1}" for i in range(len(raws))]
    first = parsed[0]
    still = first.output_frames == 1
    still_avail = available_still_codecs()
    if codecs is None:
        codecs = [c for c in STILL_CODECS if still_avail.get(c)] if still else list(DEFAULT_CODECS)
    codecs = parse_codecs(codecs)
    avail = {**available_codecs(), **still_avail}
    missing = [c for c in codecs if not avail.get(c)]
    if missing:
        lib = "Pillow" if all(c in STILL_CODECS for c in missing) else "PyAV"
        raise EvaluationError(f"this {lib} build cannot encode {', '.join(missing)}; drop it from --codecs")
    if not still and any(c in STILL_CODECS for c in codecs):
        raise EvaluationError(f"{', '.join(c for c in codecs if c in STILL_CODECS)} code{'s' if len(codecs) > 1 else ''}"
                              f" one picture; this code has {first.output_frames} frames: use x264, x265 or av1")
    for name, c in zip(names[1:], parsed[1:]):
        if (c.model, c.frames, c.height, c.width, c.fps_num, c.fps_den, c.output_frames) != (
                first.model, first.frames, first.height, first.width, first.fps_num, first.fps_den,
                first.output_frames):
            raise EvaluationError(f"{name} was made with another backbone or geometry than {names[0]}")
    if backbone is None:
        backbone = load_backbone(first.model)
    ref = coded_reference(video, first, backbone, start_seconds=start_seconds, limits=limits)
    T, H, W = ref.frames.shape[:3]
    seconds = T / float(ref.fps)
    notes = list(ref.notes)
    if not still:
        notes.append(START_NOTE.format(start=start_seconds))
    if backbone.is_tiny:
        notes.append(TINY_NOTE)

    def rate(nbytes: int) -> dict:
        return {"bytes": int(nbytes), "kbps": kbit_per_second(nbytes, seconds), "bpp": nbytes * 8 / (T * H * W)}

    rows: list[dict] = []
    unavailable: set[str] = set()
    metric_notes: list[str] = []

    def add_quality(row: dict, q: dict) -> None:
        for k in ("psnr_rgb", "psnr_y", "ms_ssim", "lpips", "dists"):
            row[k] = q.get(k)
        if q.get("unavailable"):
            unavailable.add(q["unavailable"])
        for n in q.get("notes", []):
            if n not in metric_notes:
                metric_notes.append(n)

    sizes = []
    for name, raw in zip(names, raws):
        say(f"decoding {name}")
        t0 = time.perf_counter()
        dec = codec.decode(raw, steps=decode_steps, backbone=backbone)
        row = {"kind": "code", "codec": "lora", "name": name, "budget": None, "crf": None, "fits": None,
               **rate(len(raw)), "seconds": round(time.perf_counter() - t0, 3),
               "decode_steps": dec.report.get("decode_steps"), "refine_bits": dec.report.get("refine_bits", 0)}
        add_quality(row, _quality(ref.frames, dec.frames, perceptual))
        if dec.code.n_segments > 1:
            row["segments"] = dec.code.n_segments
            row["seams"] = seam_report(ref.frames, dec.frames, [g.start for g in dec.code.segment_list],
                                       dec.code.frames)
        rows.append(row)
        sizes.append(len(raw))

    budgets = sorted({max(1, int(round(s * f))) for s in sizes for f in [1.0, *curve]})
    for short in codecs:
        for budget in budgets:
            say(f"{short} at {budget} bytes")
            t0 = time.perf_counter()
            if short in STILL_CODECS:  # a picture file at the highest quality that fits (Pillow)
                r = encode_still_at_budget(ref.frames, short, budget)
                row = {"kind": "baseline", "codec": short, "name": short, "budget": budget, "crf": None,
                       "quality": r.quality, "fits": r.fits, **rate(r.bytes), "payload_bytes": r.bytes,
                       "seconds": round(time.perf_counter() - t0, 3), "at_code_size": budget in sizes}
                add_quality(row, _quality(ref.frames, r.frames, perceptual))
                rows.append(row)
                continue
            r = encode_at_budget(ref.frames, ref.fps, short, budget)
            row = {"kind": "baseline", "codec": short, "name": short, "budget": budget, "crf": r.crf, "fits": r.fits,
                   **rate(r.bytes), "payload_bytes": r.payload_bytes, "seconds": round(time.perf_counter() - t0, 3),
                   "at_code_size": budget in sizes}
            add_quality(row, _quality(ref.frames, r.frames, perceptual))
            rows.append(row)
    return {
        "clip": str(video) if not hasattr(video, "frames") else "<clip>",
        "start_seconds": float(start_seconds),
        "model": first.model,
        "geometry": {"frames": T, "height": H, "width": W, "fps": float(ref.fps), "seconds": seconds},
        "codecs": codecs,
        "curve": curve,
        "rows": rows,
        "still": still,
        "perceptual_unavailable": "; ".join(sorted(unavailable)) or None,
        "metric_notes": metric_notes,
        "notes": notes,
    }


def _fmt(v, spec: str, none: str = "-") -> str:
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def format_table(result: dict) -> str:
    """The comparison as an aligned text table, notes below."""
    rows = result["rows"]
    perceptual = any(r.get("lpips") is not None or r.get("dists") is not None for r in rows)
    still = result.get("still")
    # a picture has no rate per second: no kbit/s column
    head = ["codec", "budget", "bytes", *([] if still else ["kbit/s"]), "bpp", "quality" if still else "crf", "fits",
            "PSNR", "PSNR-Y", "MS-SSIM"]
    if perceptual:
        head += ["LPIPS", "DISTS"]
    lines = []
    for r in rows:
        cells = [r["name"] if r["kind"] == "code" else r["codec"], _fmt(r["budget"], "d"), str(r["bytes"]),
                 *([] if still else [_fmt(r["kbps"], ".2f")]), _fmt(r["bpp"], ".5f"), _fmt(r.get("quality") if still else r["crf"], "d"),
                 "-" if r["fits"] is None else ("yes" if r["fits"] else "NO"),
                 _fmt(r["psnr_rgb"], ".2f"), _fmt(r["psnr_y"], ".2f"), _fmt(r["ms_ssim"], ".4f")]
        if perceptual:
            cells += [_fmt(r.get("lpips"), ".4f"), _fmt(r.get("dists"), ".4f")]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for c in lines:
        out.append("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths))))
    g = result["geometry"]
    what = "one picture" if still else f"{g['frames']} frames, {g['fps']:g} fps ({g['seconds']:.3g} s)"
    out.append(f"clip: {result['clip']} at the coded geometry {g['width']}x{g['height']}, {what}; sizes are whole "
               f"files (code / {'picture file' if still else 'mp4'}); PSNR in dB")
    for r in rows:
        sm = r.get("seams")
        if sm:
            out.append(f"{r['name']}: {sm['segments']} segments; seams: PSNR {_fmt(sm['psnr_boundary'], '.2f')} dB at "
                       f"the {sm['boundary_frames']} frames around the {sm['junctions']} junctions (each place where the "
                       f"segments a frame comes from change) vs {_fmt(sm['psnr_interior'], '.2f')} dB inside; mean "
                       f"frame-to-frame change (of 255) "
                       f"{_fmt(sm['change_boundary'], '.2f')} at junctions vs {_fmt(sm['change_interior'], '.2f')} inside "
                       f"(source {_fmt(sm['source_change_boundary'], '.2f')} / {_fmt(sm['source_change_interior'], '.2f')})")
    if still:
        out.append("a still picture: the baselines are picture files (Pillow) at the highest quality that fits")
    if any(r["fits"] is False for r in rows):
        out.append("fits NO: even the codec's worst CRF (quality) is over the budget (its smallest file is shown)")
    if result.get("perceptual_unavailable"):
        out.append(f"LPIPS/DISTS not reported: {result['perceptual_unavailable']}")
    for n in result.get("metric_notes", []) + result.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out)


def plot_rd(result: dict, path) -> None:
    """PSNR and MS-SSIM against kbit/s, one curve per classic codec, the codes as stars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        raise EvaluationError("--plot needs matplotlib (pip install matplotlib)") from None
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise EvaluationError(f"--plot: write a .png, .pdf or .svg file, not '{path.name}'")
    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "psnr_rgb", "PSNR RGB (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for short in result["codecs"]:
            pts = sorted({(r["kbps"], r[key]) for r in rows if r["codec"] == short and r[key] is not None
                          and math.isfinite(r[key])})
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=short)
        code_pts = sorted((r["kbps"], r[key]) for r in rows if r["kind"] == "code" and r[key] is not None
                          and math.isfinite(r[key]))
        if code_pts:
            ax.plot([p[0] for p in code_pts], [p[1] for p in code_pts], marker="*", markersize=12, color="black",
                    linestyle="--" if len(code_pts) > 1 else "none", label=f"adapter code ({result['model']})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
        ax.set_xlabel("kbit/s (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    g = result["geometry"]
    title = f"{Path(result['clip']).name}: {g['width']}x{g['height']}, {g['frames']} frames"
    if result["model"] == "tiny":
        title += "  [tiny backbone: no visual knowledge, code quality not meaningful]"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------


def cmd_compare(args) -> int:
    src = Path(args.input)
    if not src.exists():
        raise EvaluationError(f"no such file: {src}")
    codes = []
    for c in args.codes:
        p = Path(c)
        if not p.exists():
            raise EvaluationError(f"no such file: {p}")
        from .bitstream import MAX_CODE_BYTES

        if p.stat().st_size > MAX_CODE_BYTES * 2:
            raise EvaluationError(f"{p} is too large to be a code ({p.stat().st_size} bytes)")
        codes.append(p.read_bytes())
    if args.plot:
        suffix = Path(args.plot).suffix.lower()
        if suffix not in (".png", ".pdf", ".svg"):
            raise EvaluationError(f"--plot: write a .png, .pdf or .svg file, not '{Path(args.plot).name}'")
        from .video import check_writable

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        check_writable(args.plot)  # before the (long) comparison, not after it
    quiet = args.json or args.quiet
    say = None if quiet else (lambda msg: print(f"... {msg}", file=sys.stderr))
    result = compare(src, codes, codecs=args.codecs, curve=args.curve, start_seconds=args.start,
                     decode_steps=args.steps, code_names=[Path(c).name for c in args.codes],
                     perceptual=not args.no_perceptual, progress=say)
    result["clip"] = str(src)
    if args.plot:
        plot_rd(result, args.plot)
        result["plot"] = str(args.plot)
    if args.json:
        print(dumps(result))
    else:
        print(format_table(result))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def add_commands(sub) -> None:
    """Register `compare` and `batch` on the CLI's subparsers."""
    c = sub.add_parser("compare", help="rate-distortion comparison of codes against x264 / x265 / AV1")
    c.add_argument("input", help="the original clip (or still picture)")
    c.add_argument("codes", nargs="+", help="one or more codes (.vov or text form) of that clip")
    c.add_argument("--codecs", default=None,
                   help="classic codecs, comma-separated (default x264,x265,av1; for a still picture's one-frame code "
                        "jpeg,webp,avif, those Pillow has)")
    c.add_argument("--curve", default=",".join(f"{f:g}" for f in DEFAULT_CURVE),
                   help="also code at these factors of each code's size, for R-D curves ('none': only at its size)")
    c.add_argument("--start", type=float, default=0.0,
                   help="start time the clip was encoded from (codes do not store it; default 0)")
    c.add_argument("--steps", type=int, default=None, help="sampling steps to decode with (default: the code's)")
    c.add_argument("--no-perceptual", action="store_true", help="skip LPIPS / DISTS even when their weights are present")
    c.add_argument("--plot", default=None, metavar="OUT.png", help="write the R-D curves (matplotlib)")
    c.add_argument("--json", action="store_true", help="print the comparison as one JSON object on stdout")
    c.add_argument("-q", "--quiet", action="store_true",
                   help="no progress lines, notes or warnings on stderr (the table is still printed)")
    c.set_defaults(func=cmd_compare)

    from .batch import add_command as add_batch

    add_batch(sub)
