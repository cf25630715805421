"""The Decode tab's work: what a code holds (no model needed) and decoding it to an mp4 with the
choices the tab offers (sampling steps, the refinement track, another caption)."""

from __future__ import annotations

from fractions import Fraction

from .. import app_support as S
from ..backbones import Geometry
from ..codec import describe
from ..errors import LimitError, LoraCodecError
from . import forms as F
from . import gpu as G
from . import runtime as R
from . import text as T
from .gpu import plain


def describe_code(code_file, code_text) -> tuple[str, dict, dict]:
    """(markdown, JSON-able info, what the refinement and segment controls should offer for this code:
    {"track": bool, "count": indexed steps, "steps": sampling steps the track is recorded on,
    "segments": a long clip's segments, "valid": bool}). A code
    that does not parse is reported in the markdown, not raised (this runs while the user types)."""
    none = {"track": False, "count": 0, "steps": 0, "valid": False, "segments": 1}
    if not code_file and not (code_text or "").strip():
        return "", {}, none
    try:
        info = describe(F.read_code_input(code_file, code_text))
    except LoraCodecError as exc:
        return f"**Not a valid code:** {T.plain(str(exc))}", {"error": str(exc)}, none
    segments = int(info.get("segments") or 1)
    track = {"track": False, "count": 0, "steps": 0, "valid": True, "segments": segments}
    if info.get("refine_indexed"):
        count = info["refine_indexed"][1] - info["refine_indexed"][0]
        track = {"track": True, "count": int(count), "steps": int(info.get("refine_steps") or 0), "valid": True,
                 "segments": segments}
    return T.code_markdown(info), plain(info), track


def decode_code(code_file, code_text, steps, refine_mode, refine_k, caption, workdir, segments=None,
                merge_file=None, merge_weights=None) -> tuple[str, str, dict]:
    """Decode a code (file or text) into `workdir`/decoded.mp4; returns (mp4 path, status markdown
    saying which sampling steps and refinement were used, the decode report). `segments`: a long
    clip's range ('2-3'; empty = all); `merge_file`: another code whose adapter is applied at once
    (editing), `merge_weights` e.g. '0.5, 0.5' (this code's first)."""
    from ..bitstream import read_code
    from ..merge import check_mergeable
    from ..segments import parse_segment_range
    from ..video import write_video

    data = F.read_code_input(code_file, code_text)
    info = describe(data)
    segments = F.segments_arg(segments)
    parse_segment_range(segments, int(info.get("segments") or 1))  # a bad range: said before any GPU time
    merge, weights = F.merge_inputs(merge_file, merge_weights)
    names = None
    if merge:
        check_mergeable([read_code(data), read_code(merge[0])], ["this code", "the code to merge"])
        names = ["this code", "the code to merge"]
    steps = F.int_in("sampling steps", steps or 0, 0, S.LIMITS.max_sample_steps) or None
    caption = caption if (caption or "").strip() else None
    if caption is not None and len(caption.encode("utf-8")) > S.LIMITS.max_caption_bytes:
        raise LimitError(f"the caption is longer than {S.LIMITS.max_caption_bytes} bytes")
    refine = F.refine_arg(refine_mode, refine_k)
    track_steps = info.get("refine_steps")
    if track_steps and refine != "none" and steps is not None and steps != track_steps:
        raise LimitError(f"this code's refinement track is recorded on {track_steps} sampling steps: set the steps "
                         f"to 0 (as stored) or {track_steps}, or replay none of the track to use other steps")
    if isinstance(refine, int) and refine > 0 and not info.get("refine_n"):
        raise LimitError("this code has no refinement track: there is nothing to replay")
    if isinstance(refine, int) and info.get("refine_indexed"):
        count = info["refine_indexed"][1] - info["refine_indexed"][0]
        if refine > count:
            raise LimitError(f"the refinement track has {count} indexed steps; K must be at most {count}")
    if merge and isinstance(refine, int) and refine > 0:
        raise LimitError("a merged decode samples with the plain ODE: choose 'all' or 'none' for the track")
    need = G.decode_estimate(data, steps, segments)
    with R.model_lock():
        out = S.gpu_call(lambda cs: G.gpu_decode(data, steps, caption, refine, cs, segments, merge or None, weights,
                                                 names),
                         S.call_duration(need), need_s=need, saved=False)
    if "error" in out:
        raise LoraCodecError(out["error"])
    if int(info.get("segments") or 1) == 1 and not merge:  # the cost model learns from one-segment decodes
        g = Geometry(info["frames"], info["height"], info["width"])
        R.COSTS.observe_decode(R.BACKBONE, g, out.get("decode_step_s"), out.get("decode_fixed_s"))
    path = workdir / "decoded.mp4"
    write_video(path, out["frames"], Fraction(*out["fps"]), crf=12)
    rep = out["report"]
    return str(path), T.decoded_markdown(rep, out["decode_s"], caption), plain(rep)
