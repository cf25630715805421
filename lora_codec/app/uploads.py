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
