"""What the page does with an uploaded clip before any fit: the preview the browser can play."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .. import app_support as S
from ..errors import LoraCodecError

PREVIEW_FRAMES = 81  # a preview the browser cannot play as uploaded: at most this many frames, re-encoded


def clip_preview(path, new_dir, playable=None) -> str | None:
    """What the Preview player shows for an uploaded clip: the file itself when browsers play it
    (mp4/webm/ogg with a codec they decode, as `playable(path)` - Gradio's check - says), else the first frames re-encoded
    as H.264 mp4 (m2ts, mkv, mov, raw .h264/.hevc, no extension...) in a folder from `new_dir()`.
    Only a preview: the clip is coded from the uploaded file. A file that is not a video shows
    nothing here; the estimate above the Compress button says why."""
    from ..video import read_video, write_video

    if not path:
        return None
    p = Path(path)
    if p.suffix.lower() in (".mp4", ".webm", ".ogg") and playable is not None and playable(str(p)):
        return str(p)
    try:
        S.check_upload(p)
        clip = read_video(p, max_frames=PREVIEW_FRAMES, limits=S.LIMITS.video_limits())
    except LoraCodecError:
        return None
    out = Path(new_dir()) / "preview.mp4"
    write_video(out, clip.frames, Fraction(clip.fps).limit_denominator(1 << 20), crf=23)
    return str(out)


def clip_check(path, start_seconds, frames, size, segments=1) -> str:
    """Said at upload (and when the start, the frames, the size or the segments change): the clip's length, size
    and rate, what part of it will be coded and at what size, a tiny source that will be upscaled,
    a start time past the end, or why the clip is refused (its limits: bytes, duration, pixels) -
    in plain words, before any work."""
    from . import forms as F
    from . import runtime as R
    from . import text as T

    if not path:
        return ""
    name = Path(path).name
    try:
        S.check_upload(path)
        from ..stills import is_still_image, read_image

        if is_still_image(path):  # a picture: one frame
            h, w = read_image(path, limits=S.LIMITS.video_limits()).frames.shape[1:3]
            g, _src, _info = F.planned_clip(path, start_seconds, frames, size)
            out = f"**{name}**: a picture, {w}x{h}; coded as one frame at {g.width}x{g.height}."
            if w < g.width or h < g.height:
                out += (f" **A tiny source**: {w}x{h} pixels will be *upscaled* to {g.width}x{g.height}; expect a "
                        "blurred picture.")
            return out
        info = S.probe(path)
        g, _src = F.planned_geometry(path, start_seconds, frames, size)
    except LoraCodecError as exc:
        return f"**{name} cannot be coded here:** {T.plain(str(exc))}"
    limit = S.LIMITS.max_clip_seconds
    if info.seconds and info.seconds > limit:
        return (f"**{name} cannot be coded here:** it is {info.seconds:.0f} s long; this app reads clips up to "
                f"{limit:g} s - cut out the part you want first.")
    report = T.clip_report(name, info, g, start_seconds, R.BACKBONE.native.frames, segments=int(segments or 1))
    if info.fps and info.seconds:
        max_start = max(0.0, (S.LIMITS.video_limits().max_frames_read - g.frames) / info.fps)
        if max_start < info.seconds - g.frames / info.fps:
            report += f" (This app reads up to {max_start:.0f} s into a clip: the start time can be at most that.)"
    return report
