"""A finished job turned into what the page shows: the code file and its text form, where the bytes
went, the reconstruction, x265 at the same number of bytes (CPU) and the metrics of both, the notes
and a JSON summary. Returned as fields named like the page's outputs (`jobs.OUTPUT_KEYS`)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import app_support as S
from .. import bitstream
from ..codec import describe
from ..units import rate_words
from . import runtime as R
from .gpu import plain
from .text import bullets


def results(job: dict, out: dict, stopped: bool) -> dict:
    """`out`: what `gpu.gpu_finish` returned. Writes the job's files (versioned: each Keep improving
    writes new ones) and returns the page's fields (`job["last"]` keeps them for a page reload)."""
    from ..baselines import encode_at_budget
    from ..metrics import evaluate
    from ..video import write_video

    wd = Path(job["dir"])
    data: bytes = out["code"]
    report = describe(data)
    name = job.get("name") or "clip"
    version = int(job.get("version", 0)) + 1
    job["version"] = version
    code_path = wd / f"{name}-{version}.vov"
    code_path.write_bytes(data)
    text = bitstream.to_text(data)
    rows, parts_sum = S.byte_table(report)
    fps = Fraction(*job["fps"])
    recon = out["frames"]
    with np.load(job["clip"]) as z:
        ref = np.ascontiguousarray(z["frames"])
    still = bool(job.get("still"))
    images = {"original_image": None, "recon_image": None, "baseline_image": None}
    if still:  # a picture: shown as pictures, compared with a picture codec at the same bytes
        from ..stills import available_still_codecs, encode_still_at_budget

        recon_path = wd / f"{name}-{version}-reconstruction.png"
        write_video(recon_path, recon[:1], fps)
        m_ours = evaluate(ref, recon)
        avail = available_still_codecs()
        kind = next(k for k in ("avif", "webp", "jpeg") if avail.get(k))
        base = encode_still_at_budget(ref, kind, len(data))
        from ..stills import encode_still

        base_file = wd / f"{name}-{version}-{kind}-{base.bytes}B{'.jpg' if kind == 'jpeg' else '.' + kind}"
        base_file.write_bytes(encode_still(ref[0], kind, base.quality))
        base_view = wd / f"{name}-{version}-{kind}-view.png"
        write_video(base_view, base.frames, fps)
        m_base = evaluate(ref, base.frames)
        base_name = f"{kind.upper()} (Pillow)"
        base_note = f"quality {base.quality}, {kind} file" if base.fits else (
            f"{kind.upper()} cannot get this small: its smallest file (quality 0) is {base.bytes} bytes")
        images = {"original_image": job.get("original_image"), "recon_image": str(recon_path),
                  "baseline_image": str(base_view)}
    else:
        recon_path = wd / f"{name}-{version}-reconstruction.mp4"
        write_video(recon_path, recon, fps, crf=12)
        m_ours = evaluate(ref, recon)
        base = encode_at_budget(ref, fps, "x265", len(data))
        base_file = wd / f"{name}-{version}-x265-{base.bytes}B.mp4"
        base_file.write_bytes(base.data)
        base_view = wd / f"{name}-{version}-x265-view.mp4"
        write_video(base_view, base.frames, fps, crf=12)
        m_base = evaluate(ref, base.frames)
        base_name = "x265 (PyAV)"
        base_note = f"CRF {base.crf}, mp4 file" if base.fits else (
            f"x265 cannot get this small: its smallest file (CRF {base.crf}) is {base.bytes} bytes")
    ours_note = ("tiny backbone: no visual knowledge, not a meaningful reconstruction" if R.TINY
                 else f"{report['sample_steps']} sampling steps")
    metrics = [S.metric_row("lora_codec", len(data), m_ours, ours_note),
               S.metric_row(base_name, base.bytes, m_base, base_note)]
    seg_summary = None
    if report.get("segments", 1) > 1:  # a long clip: what each segment cost, and how its seams look
        from ..segments import seam_report

        per = (out.get("report") or {}).get("segment_reports") or []
        seams = seam_report(ref, recon, report["segment_starts"], report["segment_frames"])
        seg_summary = {"segments": report["segments"], "segment_frames": report["segment_frames"],
                       "starts": report["segment_starts"], "fit_seconds_per_segment": [r.get("fit_seconds") for r in per],
                       "seams": seams}
    notes = list(job.get("notes", [])) + [n for n in out.get("notes", []) if n not in job.get("notes", [])]
    notes += [n for n in m_ours.get("notes", [])]
    if m_ours.get("unavailable"):
        notes.append("LPIPS / DISTS not shown: their weights are not on this machine (nothing is downloaded)")
    if seg_summary:
        secs = ", ".join(f"{x:.1f} s" for x in seg_summary["fit_seconds_per_segment"] if x is not None)
        sm = seg_summary["seams"]
        notes.append(f"{seg_summary['segments']} segments of {seg_summary['segment_frames']} frames; fit time per "
                     f"segment: {secs}; at the seams PSNR {sm['psnr_boundary']:.2f} dB vs {sm['psnr_interior']:.2f} dB "
                     "inside the segments")
    if parts_sum != report["total_bytes"]:  # would be a bug in the accounting: say so, do not hide it
        notes.append(f"the byte table adds up to {parts_sum} bytes but the code is {report['total_bytes']} (a bug)")
    steps_done = int(job.get("steps_done", 0))
    decoded_psnr = (out.get("report") or {}).get("decoded_psnr")
    summary = {
        "code_text": text,
        "total_bytes": report["total_bytes"],
        "parts": {r[0]: r[1] for r in rows[:-1]},
        "parts_sum": parts_sum,
        "kbytes_per_second": report["kbytes_per_second"],
        "bits_per_pixel": report["bits_per_pixel"],
        "fit_steps": steps_done,
        "stopped_early": bool(stopped),
        "geometry": {"frames": report["frames"], "height": report["height"], "width": report["width"],
                     "fps": report["fps"]},
        "model": report["model"],
        "metrics": {"lora_codec": {k: m_ours.get(k) for k in ("psnr_rgb", "psnr_y", "ms_ssim")},
                    ("x265" if not still else base.codec): {k: m_base.get(k) for k in ("psnr_rgb", "psnr_y", "ms_ssim")}
                    | {"bytes": base.bytes, "fits": base.fits,
                       **({"quality": base.quality} if still else {"crf": base.crf})}},
        "still": still,
        "segments": seg_summary,
        "decoded_psnr": decoded_psnr,
        "timing_s": {"finish": out.get("finish_s"), "decode": out.get("decode_s")},
        "notes": notes,
    }
    head = ("**Stopped early** - the code is valid (the fit is anytime); *Keep improving* continues from the saved "
            "state." if stopped else "**Done.**")
    rate = rate_words(report["total_bytes"], report["seconds"], report["frames"])
    status = (f"{head} {report['total_bytes']} bytes ({rate + ', ' if rate else ''}"
              f"{report['bits_per_pixel']:.4g} bits per pixel) after {steps_done} fit steps.")
    if decoded_psnr is not None:  # measured by the encoder on the code it wrote, decoded as a receiver would
        status += (f" Decoded as anyone with the code will see it: {decoded_psnr:.2f} dB PSNR against the coded "
                   f"{'picture' if still else 'frames'} (higher is closer).")
    return plain({
        "status": status,
        "notes": bullets(notes),
        "code_file": str(code_path),
        "code_text": text,
        "bytes_table": rows,
        "original": job["original"],  # a picture: a one-frame video here, the pictures below (app.py)
        "recon": str(recon_path) if not still else None,
        "baseline": str(base_view) if not still else None,
        "baseline_file": str(base_file),
        "metrics": metrics,
        "summary": summary,
        **images,
    })
