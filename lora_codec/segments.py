"""Long clips as segments: a clip longer than the backbone's native length is coded as consecutive
segments of the native length, each with its own fitted adapter vector, in ONE code file (format
version 2, docs/FORMAT.md: header, caption and adapter structure once, a segment table, one prior
shared by all segments' symbols where that is smaller).

* **Plan** (`plan_starts`): N frames, segments of F frames (the native length), consecutive segments
  sharing at least `overlap` frames: n = ceil((N - overlap) / (F - overlap)) segments with their
  starts spread evenly from 0 to N - F, so every frame is coded and the last segment ends on the last
  frame. A clip of at most F frames is one segment, coded exactly as before (a version-1 code).
* **Encode** (`LongEncode`): every frame up to the clip-length limit (`SegmentSettings.max_seconds`,
  60 s by default; the reader's limits still apply). Segment i is fitted on its own frames with the
  encoder's ordinary session (`codec.EncodeSession`) and finished (quantised, rate-controlled) before
  segment i+1 starts. The fit is resumable per segment: the state records the finished segments'
  codes and the running segment's fit state, and a resumed encode writes the very same bytes.
  `target_kb` is for the whole file: each segment gets an equal share of what the header and the
  segment table leave, so the file never exceeds the target.
* **Decode** (`decode_segments`): every segment is sampled from the code's noise with its own adapter
  and VAE-decoded; frames covered by two segments are blended with weights that fall linearly towards
  each segment's ends (a crossfade over the shared frames; a single shared frame is the mean of the
  two), which softens the seams. A range of segments (`--segments 2-3`) decodes only those.
* **Seams** (`seam_report`): PSNR of the frames at segment junctions against the frames inside the
  segments, and the frame-to-frame change at junctions against inside, next to the source's.

A refinement track (METHOD.md section 5) belongs to one segment's trajectory, so a multi-segment code
cannot hold one (the encoder refuses `--refine-n` for a clip that needs several segments).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import bitstream
from .bitstream import Code, Segment, segmented
from .errors import LimitError, LoraCodecError
from .units import ceil_kb

__all__ = ["DEFAULT_MAX_SECONDS", "DEFAULT_OVERLAP", "SegmentSettings", "plan_starts", "read_clip", "LongEncode",
           "LongEncodeResult", "decode_segments", "parse_segment_range", "blend_segments", "Blender", "seam_report",
           "segment_info", "SegmentError"]

DEFAULT_MAX_SECONDS = 60.0
DEFAULT_OVERLAP = 1
MAX_DECODED_BYTES = 4 << 30  # frames one decode may hold (as video.Limits.max_decoded_bytes): else decode a range
STATE_KIND = "lora_codec segmented fit"
STATE_VERSION = 1


class SegmentError(LoraCodecError):
    """A long clip cannot be coded as asked (too many segments, a bad range, a mismatched state)."""


@dataclasses.dataclass
class SegmentSettings:
    """How a long clip is cut. `max_seconds`: the clip-length limit (frames after it are not coded;
    None = only the reader's limits); `overlap`: frames that consecutive segments share at least (the
    decoder blends them; 0 = none beyond what the even spread of the starts gives)."""

    max_seconds: float | None = DEFAULT_MAX_SECONDS
    overlap: int = DEFAULT_OVERLAP

    def check(self) -> None:
        if self.max_seconds is not None and not (math.isfinite(float(self.max_seconds)) and self.max_seconds > 0):
            raise SegmentError(f"--max-seconds must be a positive number of seconds (0: no limit), got {self.max_seconds:g}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, np.integer)) or self.overlap < 0:
            raise SegmentError(f"--overlap must be a whole number of frames >= 0, got {self.overlap!r}")


def plan_starts(total: int, seg_frames: int, overlap: int = DEFAULT_OVERLAP) -> tuple[int, ...]:
    """First frames of the segments of a `total`-frame clip coded as segments of `seg_frames` frames
    sharing at least `overlap` frames (see the module docstring). One segment when it fits."""
    total, seg_frames, overlap = int(total), int(seg_frames), int(overlap)
    if total < 1 or seg_frames < 1:
        raise SegmentError(f"cannot cut {total} frames into segments of {seg_frames}")
    if total <= seg_frames:
        return (0,)
    if not 0 <= overlap < seg_frames:
        raise SegmentError(f"--overlap {overlap} must be below the segment length ({seg_frames} frames)")
    n = max(2, -(-(total - overlap) // (seg_frames - overlap)))
    span = total - seg_frames
    return tuple((i * span + (n - 1) // 2) // (n - 1) for i in range(n))


def _coverage(starts, seg_frames: int, total: int) -> list[tuple[int, ...]]:
    """For each frame, the indices of the segments that cover it."""
    cover: list[list[int]] = [[] for _ in range(total)]
    for i, s in enumerate(starts):
        for t in range(s, min(total, s + seg_frames)):
            cover[t].append(i)
    return [tuple(c) for c in cover]


# -- reading ------------------------------------------------------------------------------------------


def read_clip(video, *, start_seconds: float = 0.0, max_seconds: float | None = DEFAULT_MAX_SECONDS, limits=None):
    """The clip to code: a `video.Clip` as given, or a file read up to the clip-length limit (a still
    picture through `stills.read_image`). Returns a `video.Clip` whose notes say what was cut."""
    from .stills import is_still_image, read_image
    from .video import Clip, Limits, probe_video, read_video

    limits = limits or Limits()
    if isinstance(video, Clip):
        clip = video
        if max_seconds is not None:
            keep = max(1, int(math.floor(float(max_seconds) * float(clip.fps) + 1e-9)))
            if clip.frames.shape[0] > keep:
                clip = dataclasses.replace(clip, frames=clip.frames[:keep], src_frames=keep, notes=list(clip.notes) + [
                    f"coded the first {keep} frames ({keep / float(clip.fps):.3g} s): the clip-length limit is "
                    f"{float(max_seconds):g} s (--max-seconds)"])
        return clip
    if is_still_image(video):
        if start_seconds and float(start_seconds) > 0:
            from .errors import VideoError

            raise VideoError(f"{os.fspath(video)}: a still picture has no time to start at (--start {float(start_seconds):g})")
        return read_image(video, limits=limits)
    max_frames = None
    if max_seconds is not None:
        try:  # the rate first, so that frames past the limit are not decoded (a damaged file: read_video says why)
            fps = probe_video(video, limits).fps
            max_frames = max(1, int(math.floor(float(max_seconds) * float(fps) + 1e-9)))
        except LoraCodecError:
            max_frames = None
    clip = read_video(video, start_seconds=start_seconds, max_frames=max_frames, limits=limits)
    if max_frames is not None:
        trimmed = f"trimmed to {clip.frames.shape[0]} frames"  # the reader's note when it stopped at max_frames
        for k, note in enumerate(clip.notes):
            if note.startswith(trimmed):
                clip.notes[k] = (
                    f"coded the first {clip.frames.shape[0]} frames ({clip.frames.shape[0] / float(clip.fps):.3g} s): "
                    f"the clip-length limit is {float(max_seconds):g} s (--max-seconds); the clip goes on")
    elif max_seconds is not None:
        return read_clip(clip, max_seconds=max_seconds)
    return clip


# -- encoding -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class LongEncodeResult:
    """What `LongEncode.finish` gives for a multi-segment clip (a single-segment clip gives the
    ordinary `codec.EncodeResult`). `frames`: every coded frame (uint8 [N, H, W, 3])."""

    data: bytes
    code: Code
    report: dict
    geometry: object  # backbones.Geometry of one segment
    frames: np.ndarray
    notes: list[str]
    segment_reports: list[dict]
    latents: torch.Tensor | None = None
    refined_latents: torch.Tensor | None = None
    decoded: object = None  # codec.DecodeResult of the whole file, when the encoder measured it


@dataclasses.dataclass
class SegmentProgress:
    """The fit's progress in a long clip: segment `segment` (0-based) of `segments`, and its own
    `codec`-level `FitProgress` (`progress`; None when a segment has just been finished)."""

    segment: int
    segments: int
    progress: object
    steps_done: int
    total_steps: int


class LongEncode:
    """Encode a clip of any length up to the clip-length limit (see the module docstring).

    Use like `codec.EncodeSession`: `enc = LongEncode.start(path, settings)`; `enc.fit(...)` as often as
    wanted (it finishes each segment as its fit ends); `enc.save_state(p)` / `enc.load_state(p)`;
    `enc.finish()`; always `enc.close()`. A clip of at most the native length is one segment and runs
    through one `EncodeSession` exactly as `codec.encode` does (same code, same state files)."""

    def __init__(self, backbone, settings, seg: SegmentSettings, clip, *, caption_cache=None, on_session=None):
        from .codec import EncodeSession, adapter_config_for, fit_config_for, refine_plan

        self.backbone = backbone
        self.settings = settings
        self.seg = seg
        self.caption_cache = caption_cache
        self.on_session = on_session
        self.fps = clip.fps
        T, H, W = clip.frames.shape[:3]
        self.single = T <= backbone.native.frames
        self.session = None
        self.current: int | None = None
        self._done: dict[int, bytes] = {}
        self.reports: dict[int, dict] = {}
        self._steps_before: int = 0
        if self.single:
            self.session = EncodeSession.start(clip, settings, backbone=backbone, caption_cache=caption_cache)
            self.current = 0
            self.notes = list(self.session.notes)
            self.frames = self.session.frames
            self.geometry = self.session.geometry
            self.src = self.session.src
            self.starts = (0,)
            if on_session is not None:
                on_session(self.session)
            return
        from .video import fit_to_geometry

        if settings.refine_n is not None:
            raise SegmentError(
                f"a refinement track is for a clip of one segment (at most {backbone.native.frames} frames); this clip "
                f"has {T} frames: drop --refine-n, or code a shorter part (--max-seconds)")
        refine_plan(settings, settings.sample_steps or backbone.defaults.sample_steps)
        self.adapter_config = adapter_config_for(backbone, settings)
        self.fit_config = fit_config_for(backbone, settings)
        geom = backbone.coded_geometry(T, H, W, size=settings.size)
        if T > bitstream.MAX_TOTAL_FRAMES:
            raise LimitError(f"the clip has {T} frames; a code holds at most {bitstream.MAX_TOTAL_FRAMES}")
        self.geometry = geom
        self.starts = plan_starts(T, geom.frames, seg.overlap)
        n = len(self.starts)
        d = self.adapter_config.theta_length
        if n > bitstream.MAX_SEGMENTS or n * d > bitstream.MAX_TOTAL_SYMBOLS:
            raise LimitError(
                f"the clip needs {n} segments of {d:,} adapter values, more than a code holds "
                f"({bitstream.MAX_SEGMENTS} segments, {bitstream.MAX_TOTAL_SYMBOLS:,} values); code a shorter part "
                "(--max-seconds)")
        self.frames = fit_to_geometry(clip.frames, T, geom.height, geom.width)
        self.src = (clip.src_width, clip.src_height, clip.src_frames)
        shared = geom.frames - max(b - a for a, b in zip(self.starts, self.starts[1:]))
        self.notes = list(clip.notes) + [
            f"coded all {T} frames as {n} segments of {geom.frames} frames (a fit each); consecutive segments share "
            f"at least {shared} frame{'s' if shared != 1 else ''}, blended by the decoder",
            f"coded geometry {geom.width}x{geom.height} at {float(clip.fps):.3g} fps (source {clip.src_width}x"
            f"{clip.src_height})"]
        self._target_kb = None

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, video, settings, seg: SegmentSettings | None = None, *, backbone=None, limits=None,
              caption_cache=None, on_session=None) -> "LongEncode":
        """Read `video` (path or `video.Clip`) up to the clip-length limit and prepare the fit.
        `on_session(session)` is called with each segment's `EncodeSession` when it is opened (e.g. to
        make its fit data-parallel)."""
        from .backbones import load_backbone
        from .codec import check_settings

        seg = seg or SegmentSettings()
        seg.check()
        backbone = backbone or load_backbone(settings.model)
        check_settings(settings, backbone)  # fail before reading
        clip = read_clip(video, start_seconds=settings.start_seconds, max_seconds=seg.max_seconds, limits=limits)
        return cls(backbone, settings, seg, clip, caption_cache=caption_cache, on_session=on_session)

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def segments(self) -> int:
        return len(self.starts)

    @property
    def total_frames(self) -> int:
        return int(self.frames.shape[0]) if not self.single else int(self.geometry.frames)

    @property
    def steps_per_segment(self) -> int:
        cfg = self.session.fit_config if self.single else self.fit_config
        return int(cfg.total_steps)

    @property
    def total_steps(self) -> int:
        return self.steps_per_segment * self.segments

    @property
    def steps_done(self) -> int:
        if self.single:
            return int(self.session.fitter.step)
        own = int(self.session.fitter.step) if self.session is not None and self.current not in self._done else 0
        return sum(int(r.get("steps", 0)) for r in self.reports.values()) + own

    @property
    def segments_done(self) -> list[int]:
        if self.single:
            return [0] if self.session.fitter.done else []
        return sorted(self._done)

    @property
    def done(self) -> bool:
        """Every segment fitted (and, for a long clip, finished)."""
        if self.single:
            return bool(self.session.fitter.done)
        return len(self.done_segments) == self.segments

    @property
    def done_segments(self) -> dict:
        return self._done

    @property
    def last_progress(self):
        """The running segment's last `FitProgress` (None before its first step)."""
        return None if self.session is None or self.current in self._done else self.session.fitter.last

    @property
    def fitting_segment(self) -> int | None:
        """The segment being fitted (0-based), None when none is."""
        return None if self.session is None or self.current in self._done else self.current

    def code_bytes_estimate(self) -> int:
        """About what the code would weigh: a one-segment clip's exact code now; for a long clip the mean
        of the segments' own codes so far (finished ones, and the running one as it is now) times the
        number of segments."""
        if self.single:
            return len(self.session.code_bytes())
        sizes = [int(r.get("bytes_alone", 0)) for r in self.reports.values()]
        if self.session is not None and self.current not in self._done:
            sizes.append(len(self.session.code_bytes()))
        return int(round(np.mean(sizes) * self.segments)) if sizes else 0

    def extend(self, extra_steps: int) -> None:
        """Keep improving a one-segment fit (a longer stage 2); a long clip's finished segments are
        already quantised, so it cannot be extended (encode it again with more steps)."""
        if not self.single:
            raise SegmentError("keep improving is for one-segment fits: a long clip's finished segments are already "
                               "quantised; compress it again with a larger fit budget")
        self.session.extend(extra_steps)

    def segment_frames(self, i: int) -> np.ndarray:
        F = self.geometry.frames
        return self.frames[self.starts[i]:self.starts[i] + F]

    def _source_digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.frames).tobytes())
        h.update(self.settings.caption.encode("utf-8"))
        h.update(self.backbone.fingerprint)
        h.update(repr((self.geometry, self.fps, self.starts)).encode())
        return h.hexdigest()[:32]

    def _settings_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self.settings), default=str))

    # -- segments --------------------------------------------------------------------------------------
    def _open(self, i: int):
        """The session of segment i (closing the previous one)."""
        from .codec import EncodeSession

        if self.current == i and self.session is not None:
            return self.session
        self._close_session()
        settings = self.settings
        if settings.target_kb is not None:
            settings = dataclasses.replace(settings, target_kb=None)
        session = EncodeSession(self.backbone, settings, self.segment_frames(i), self.fps, self.src, notes=[],
                                caption_cache=self.caption_cache)
        self.session, self.current = session, i  # closed by close() whatever happens next
        if self.settings.target_kb is not None:
            if self._target_kb is None:
                self._target_kb = self._segment_target_kb(session)
            session.settings = dataclasses.replace(session.settings, target_kb=self._target_kb)
        if self.on_session is not None:
            self.on_session(session)
        return session

    def _segment_target_kb(self, session) -> float:
        """Each segment's share of `target_kb`, as the target of its own one-segment code: the bytes the
        header and segment table of the whole file leave, split equally (so the file never exceeds the
        target; the writer's shared prior can only make it smaller)."""
        target = int(self.settings.target_kb * 1000)
        zeros = np.zeros(self.adapter_config.theta_length, dtype=np.int32)
        single = session.make_code(zeros, 0.1)
        rep1 = bitstream.size_report(bitstream.write_code(single))
        fixed1 = rep1["total_bytes"] - rep1["prior_bytes"] - rep1["payload_bytes"] - 2
        multi = segmented(single, [Segment(s, 0.1, zeros) for s in self.starts], self.total_frames)
        rep2 = bitstream.size_report(bitstream.write_code(multi))
        fixed2 = rep2["total_bytes"] - rep2["prior_bytes"] - rep2["payload_bytes"] - 2
        share = (target - fixed2) // self.segments
        if share < 8:
            least = fixed2 + 8 * self.segments
            raise SegmentError(
                f"--target-kb {self.settings.target_kb:g} is too small for this clip's {self.segments} segments: the "
                f"header and segment table take {fixed2} bytes and each segment at least 8 more; ask for at least "
                f"{ceil_kb(least):g} kB")
        return (share + fixed1) / 1000.0

    def _finish_segment(self, i: int, callback=None) -> None:
        session = self.session
        try:
            # measure=False: a segment's own code is not what the receiver decodes; the whole file is
            # measured once in finish()
            res = session.finish(callback=None if callback is None else
                                 (lambda p: callback(SegmentProgress(i, self.segments, p, self.steps_done,
                                                                     self.total_steps))), measure=False)
        except LoraCodecError as exc:
            if self.settings.target_kb is not None and "target-kb" in str(exc):
                raise SegmentError(f"--target-kb {self.settings.target_kb:g} for {self.segments} segments leaves "
                                   f"segment {i + 1} too few bytes ({exc})") from None
            raise
        self._done[i] = res.data
        self.reports[i] = {
            "segment": i + 1, "start_frame": int(self.starts[i]), "frames": int(self.geometry.frames),
            "steps": int(session.fitter.step), "fit_seconds": round(float(session.fitter.elapsed), 3),
            "bytes_alone": len(res.data), "final_mse": None if session.fitter.last is None else session.fitter.last.mse,
        }
        self._close_session()

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session, self.current = None, None

    # -- fit -------------------------------------------------------------------------------------------
    def fit(self, *, callback: Callable[[SegmentProgress], None] | None = None, max_steps: int | None = None,
            max_seconds: float | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        """Fit (and finish) the segments in order until all are done, or until `max_steps` more steps /
        `max_seconds` / `should_stop()`. `callback(SegmentProgress)` after every step. True when every
        segment is done."""
        if self.single:
            wrapped = None if callback is None else (
                lambda p: callback(SegmentProgress(0, 1, p, int(p.step), self.total_steps)))
            return self.session.fit(callback=wrapped, max_steps=max_steps, max_seconds=max_seconds,
                                    should_stop=should_stop)
        t0 = time.perf_counter()
        ran = 0
        for i in range(self.segments):
            if i in self._done:
                continue
            left = None if max_steps is None else max_steps - ran
            secs = None if max_seconds is None else max_seconds - (time.perf_counter() - t0)
            if (left is not None and left <= 0) or (secs is not None and secs <= 0) or (should_stop and should_stop()):
                return False
            session = self._open(i)
            before = session.fitter.step
            wrapped = None if callback is None else (
                lambda p, i=i: callback(SegmentProgress(i, self.segments, p, self.steps_done, self.total_steps)))
            finished = session.fit(callback=wrapped, max_steps=left, max_seconds=secs, should_stop=should_stop)
            ran += session.fitter.step - before
            if not finished:
                return False
            self._finish_segment(i, callback)
            if callback is not None:
                callback(SegmentProgress(i, self.segments, None, self.steps_done, self.total_steps))
        return True

    # -- state -----------------------------------------------------------------------------------------
    def save_state(self, path) -> None:
        """Write the state atomically: the finished segments' codes and the running segment's fit."""
        if self.single:
            return self.session.save_state(path)
        from safetensors.torch import save_file

        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for i, data in self._done.items():
            tensors[f"segment.{i}.code"] = torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
        current = None
        current_meta = None
        if self.session is not None and self.current is not None and self.current not in self._done:
            current = self.current
            t, current_meta = self.session.fitter.state_tensors()
            for k, v in t.items():
                tensors[f"current.{k}"] = v
        meta = {"kind": STATE_KIND, "version": STATE_VERSION, "starts": list(self.starts),
                "segment_frames": int(self.geometry.frames), "total_frames": self.total_frames,
                "digest": self._source_digest(), "settings": self._settings_json(),
                "segment_settings": dataclasses.asdict(self.seg), "done": sorted(self._done),
                "reports": {str(k): v for k, v in self.reports.items()}, "current": current,
                "current_meta": current_meta}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"lora_codec_segments": json.dumps(meta)})
        os.replace(tmp, path)

    def load_state(self, path) -> None:
        """Continue from a state written by `save_state` (for the same clip and settings)."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("lora_codec_segments")
        except (SafetensorError, OSError, ValueError) as exc:
            raise LoraCodecError(f"not a lora_codec fit state: {path} ({str(exc).splitlines()[0][:120]})") from None
        if self.single:
            if raw is not None:
                raise SegmentError(f"{path} is the state of a {len(json.loads(raw).get('starts', []))}-segment clip; "
                                   "this clip is one segment")
            return self.session.load_state(path)
        if raw is None:
            raise SegmentError(f"{path} is the fit state of a one-segment clip; this clip has {self.segments} segments")
        try:
            meta = json.loads(raw)
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise LoraCodecError(f"not a lora_codec fit state: {path} ({str(exc).splitlines()[0][:120]})") from None
        if meta.get("kind") != STATE_KIND or meta.get("version") != STATE_VERSION:
            raise LoraCodecError(f"{path} is not a lora_codec segmented fit state of version {STATE_VERSION}")
        if meta.get("starts") != list(self.starts) or meta.get("digest") != self._source_digest():
            raise SegmentError("the fit state was made for another clip, caption, geometry or segment plan; it cannot "
                               "resume this one")
        saved = meta.get("settings") or {}
        now = self._settings_json()
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            raise SegmentError(f"the fit state was made with other settings (differ: {', '.join(diff)})")
        self._close_session()
        self._done = {}
        for i in meta.get("done", []):
            key = f"segment.{int(i)}.code"
            if key not in tensors:
                raise LoraCodecError(f"{path}: the state lacks segment {int(i) + 1}'s code")
            data = bytes(tensors[key].numpy().tobytes())
            bitstream.read_code(data)  # a damaged state is refused here, not at the end
            self._done[int(i)] = data
        self.reports = {int(k): v for k, v in (meta.get("reports") or {}).items()}
        current = meta.get("current")
        if current is not None:
            session = self._open(int(current))
            fit_meta = meta["current_meta"]
            cur = {k[len("current."):]: v for k, v in tensors.items() if k.startswith("current.")}
            cfg = fit_meta.get("config", {})  # as EncodeSession.load_state: the saved schedule
            for key in ("stage1_steps", "stage2_steps"):
                if key in cfg:
                    setattr(session.fit_config, key, max(int(cfg[key]), getattr(session.fit_config, key))
                            if key == "stage2_steps" else int(cfg[key]))
            session.fitter.load_state(cur, fit_meta)

    # -- finish ----------------------------------------------------------------------------------------
    def finish(self, *, callback=None, progress: Callable[[int, int], None] | None = None, partial: bool = False,
               decode_progress: Callable[[int, int], None] | None = None):
        """The code: for one segment `codec.EncodeSession.finish`'s result (from the fit as it is); else
        a `LongEncodeResult` - every segment must be done (`fit()` returned True), unless `partial`: then
        (an early stop) the code holds the segments fitted so far, the running one finished from its fit
        as it is (the first segment, unfitted, when nothing was fitted yet)."""
        from .codec import describe

        if self.single:
            return self.session.finish(callback=callback, progress=progress, decode_progress=decode_progress)
        missing = [i + 1 for i in range(self.segments) if i not in self._done]
        if missing and not partial:
            raise SegmentError(f"segments {missing} are not fitted yet; run fit() to the end first")
        notes = list(self.notes)
        count = self.segments
        if missing:
            running = self.fitting_segment
            if running is not None and self.session.fitter.step > 0:
                self._finish_segment(running)
            if 0 not in self._done:
                self._open(0)
                self._finish_segment(0)
            count = 0
            while count in self._done:
                count += 1
            notes.append(f"stopped early: the code holds the first {count} of {self.segments} segments "
                         f"({self.starts[count - 1] + self.geometry.frames} of {self.total_frames} frames)")
        total = self.starts[count - 1] + self.geometry.frames
        template = bitstream.read_code(self._done[0])
        segs = []
        for i in range(count):
            c = bitstream.read_code(self._done[i])
            segs.append(Segment(self.starts[i], c.step_size, c.symbols))
        code = segmented(dataclasses.replace(template, sections={}), segs, total)
        data = bitstream.write_code(code)
        report = describe(data)
        reports = [self.reports.get(i, {}) for i in range(count)]
        report.update(
            steps=sum(int(r.get("steps", 0)) for r in reports),
            fit_seconds=round(sum(float(r.get("fit_seconds", 0.0)) for r in reports), 3),
            final_mse=float(np.mean([r["final_mse"] for r in reports if r.get("final_mse") is not None]))
            if any(r.get("final_mse") is not None for r in reports) else None,
            notes=notes, segment_reports=reports,
            segment_target_kb=self._target_kb,
        )
        decoded = None
        if self.settings.measure:
            from .codec import decode, measure_decode

            # the whole file decoded exactly as a receiver decodes it (every segment, blended seams)
            quality, decoded = measure_decode(self.frames[:total],
                                              lambda: decode(data, backbone=self.backbone, progress=decode_progress))
            report.update(quality)
        return LongEncodeResult(data=data, code=code, report=report, geometry=self.geometry, frames=self.frames[:total],
                                notes=notes, segment_reports=reports, decoded=decoded)

    def close(self) -> None:
        if self.single:
            if self.session is not None:
                self.session.close()
            return
        self._close_session()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def encode(video, settings=None, seg: SegmentSettings | None = None, *, callback=None, resume=None, save_state=None,
           max_steps: int | None = None, backbone=None, limits=None):
    """`codec.encode` for a clip of any length: returns `codec.EncodeResult` (one segment) or
    `LongEncodeResult`, or None when stopped by `max_steps` (the state is then in `save_state`)."""
    from .codec import EncodeSettings

    settings = settings or EncodeSettings()
    with LongEncode.start(video, settings, seg, backbone=backbone, limits=limits) as enc:
        if resume is not None:
            enc.load_state(resume)
        done = enc.fit(callback=callback, max_steps=max_steps)
        if save_state is not None:
            enc.save_state(save_state)
        if not done:
            return None
        return enc.finish()


def state_step(path) -> int:
    """How far a saved fit state is (for comparing the ranks of a data-parallel batch): a one-segment
    state's step, or a segmented state's finished segments and running step as one number. -1 when
    the file is no state."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        if "lora_codec_segments" in md:
            meta = json.loads(md["lora_codec_segments"])
            own = int((meta.get("current_meta") or {}).get("step", 0))
            return len(meta.get("done", [])) * 1_000_000 + own
        return int(json.loads(md.get("lora_codec", "null"))["step"])
    except Exception:
        return -1


# -- decoding -----------------------------------------------------------------------------------------


def parse_segment_range(text, count: int) -> tuple[int, int]:
    """`--segments` -> (first, stop), 0-based, stop exclusive. Text is 1-based and inclusive: '2'
    (segment 2), '2-3', '2-' (2 to the end), '-3'; None / '' / 'all' = every segment. A (first, last)
    tuple is taken as 1-based inclusive too."""
    if text is None:
        return 0, count
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise SegmentError("a segment range is (first, last), 1-based")
        a, b = int(text[0]), int(text[1])
    else:
        t = str(text).strip().lower()
        if t in ("", "all"):
            return 0, count
        lo, sep, hi = t.partition("-")
        try:
            a = int(lo) if lo.strip() else 1
            b = (int(hi) if hi.strip() else count) if sep else a
        except ValueError:
            raise SegmentError(f"--segments must look like 2, 2-3, 2- or -3 (1-based), got '{text}'") from None
    if 1 <= b < a <= count:
        raise SegmentError(f"--segments {text}: the first segment ({a}) comes after the last ({b}); "
                           f"write it as {b}-{a}")
    if not 1 <= a <= b <= count:
        raise SegmentError(f"--segments {text}: this code has {count} segment{'s' if count != 1 else ''} "
                           f"(1..{count})")
    return a - 1, b


def _blend_frame(starts, seg_frames: int, pieces: dict, t: int) -> np.ndarray:
    """Frame t from the decoded segments covering it (see `blend_segments`)."""
    cover = [i for i in sorted(pieces) if starts[i] <= t < starts[i] + seg_frames]
    if len(cover) == 1:
        return pieces[cover[0]][t - starts[cover[0]]]
    acc = np.zeros(pieces[cover[0]].shape[1:], dtype=np.float64)
    wsum = 0.0
    for i in cover:
        w = float(min(t - starts[i] + 1, starts[i] + seg_frames - t))
        acc += w * pieces[i][t - starts[i]]
        wsum += w
    return np.clip(np.rint(acc / wsum), 0, 255).astype(np.uint8)


class Blender:
    """Joins decoded segments `first..stop-1` (added in order) into one video as they come, holding
    only the segments that later frames still need (a long clip never holds all its segments)."""

    def __init__(self, starts, seg_frames: int, first: int, stop: int, frame_shape: tuple):
        self.starts, self.F, self.first, self.stop = list(starts), int(seg_frames), first, stop
        self.offset = self.starts[first]
        self.out = np.empty((self.starts[stop - 1] + self.F - self.offset, *frame_shape), dtype=np.uint8)
        self.pieces: dict[int, np.ndarray] = {}
        self.next_frame = self.offset

    def add(self, i: int, frames: np.ndarray) -> None:
        self.pieces[i] = frames
        upto = self.starts[i + 1] if i + 1 < self.stop else self.starts[i] + self.F  # frames final from now on
        for t in range(self.next_frame, upto):
            self.out[t - self.offset] = _blend_frame(self.starts, self.F, self.pieces, t)
        self.next_frame = upto
        for j in [j for j in self.pieces if self.starts[j] + self.F <= upto]:
            del self.pieces[j]

    def result(self) -> tuple[np.ndarray, int]:
        return self.out, self.offset


def blend_segments(starts, seg_frames: int, decoded: dict[int, np.ndarray]) -> tuple[np.ndarray, int]:
    """Put decoded segments (index -> uint8 [F, H, W, 3], consecutive indices) together: (frames from
    the first decoded segment's start to the last one's end, that first frame's index). A frame covered
    by several decoded segments is their weighted mean, a segment's weight at frame t being
    min(t - start + 1, start + F - t) (frames from its nearer end), rounded to uint8; a frame covered
    by one segment is that segment's."""
    idx = sorted(decoded)
    b = Blender(starts, seg_frames, idx[0], idx[-1] + 1, decoded[idx[0]].shape[1:])
    for i in idx:
        b.add(i, decoded[i])
    return b.result()


def decode_segments(raw: bytes, code: Code, *, backbone, steps: int | None = None, caption: str | None = None,
                    progress: Callable[[int, int], None] | None = None, segments=None, merge=None,
                    weights=None, merge_names=None, refine="all"):
    """Decode a multi-segment code, a range of its segments, or a merge of codes (`merge`: more
    codes, binary or text, whose adapters are applied with the first's at once, `weights` one per code
    with the first's first; see merge.py). Plain ODE sampling on every segment. Returns
    `codec.DecodeResult` (its `latents` are the last decoded segment's)."""
    from . import refine as refine_mod
    from .backbones import Geometry
    from .codec import DecodeResult, _code_velocity, describe, require_finite
    from .merge import MergedAdapter, check_backbone, check_mergeable, weights_note
    from .sampling import initial_noise, sample_ode, sigma_schedule
    from .video import tensor_to_video

    others = [bitstream.read_code(bitstream.load_code_bytes(m)) for m in (merge or [])]
    codes = [code] + others
    names = list(merge_names) if merge_names else ["the code"] + [f"merged code {k}" for k in range(1, len(codes))]
    check_mergeable(codes, names)
    w = [1.0] * len(codes) if weights is None else list(weights)
    for c in codes:
        check_backbone(backbone, c)
    mode = refine_mod.parse_refine(refine)
    track = refine_mod.read_track(code)
    if track is not None and isinstance(mode, int) and mode > 0:
        raise refine_mod.RefinementError(f"--refine {mode}: a merged decode samples with the plain ODE; the refinement "
                                         "track belongs to the code alone")
    if isinstance(mode, int) and mode > 0 and track is None:
        raise refine_mod.RefinementError(f"--refine {mode}: this code has no refinement track")
    geom = Geometry(code.frames, code.height, code.width)
    backbone.check_geometry(geom)
    if steps is not None and not 1 <= steps <= 10000:
        raise LoraCodecError("--steps must be in 1..10000")
    steps = steps or code.steps
    first, stop = parse_segment_range(segments, code.n_segments)
    starts = [s.start for s in code.segment_list]
    text = code.caption if caption is None else caption
    out_frames = starts[stop - 1] + code.frames - starts[first]
    out_bytes = out_frames * code.height * code.width * 3
    if out_bytes > MAX_DECODED_BYTES:
        raise LimitError(f"decoding segments {first + 1}-{stop} gives {out_frames} frames of {code.width}x{code.height} "
                         f"({out_bytes / 2**30:.1f} GiB), over the limit of {MAX_DECODED_BYTES / 2**30:g} GiB; decode a "
                         "range of segments at a time (--segments)")
    t0 = time.perf_counter()
    shape = backbone.latent_shape(geom)
    adapter = MergedAdapter(backbone.transformer, codes, w)
    blender = None
    latents = None
    count = stop - first
    try:
        velocity = _code_velocity(backbone, code, adapter, text)
        noise = initial_noise(code.noise_seed, shape)
        sigmas = sigma_schedule(steps, code.shift)
        for k, i in enumerate(range(first, stop)):
            adapter.set_segment(i)
            step_progress = None if progress is None else (lambda j, n, k=k: progress(k * n + j, count * n))
            latents = sample_ode(velocity, noise, sigmas, progress=step_progress)
            require_finite(latents, f"segment {i + 1}'s sampled latents")
            video = backbone.decode_latents(latents)
            require_finite(video, f"segment {i + 1}'s decoded frames")
            piece = tensor_to_video(video)
            if blender is None:
                blender = Blender(starts, code.frames, first, stop, piece.shape[1:])
            blender.add(i, piece)
    finally:
        backbone.pipe.transformer = adapter.detach()
    frames, first_frame = blender.result()
    fps = Fraction(code.fps_num, code.fps_den)
    report = describe(raw)
    report.update(decode_seconds=round(time.perf_counter() - t0, 3), decode_steps=steps, decode_caption=text,
                  decode_refine="none", decode_refined_steps=0,
                  decode_segments=[first + 1, stop], decode_first_frame=int(first_frame),
                  decode_start_seconds=float(first_frame / fps), decode_frames=int(frames.shape[0]))
    if len(codes) > 1:
        report.update(decode_merged=names, decode_weights=w, decode_merge=weights_note(names, w))
    if track is not None and mode == "all" and len(codes) > 1:
        report["decode_notes"] = ["the code's refinement track is not replayed in a merged decode (plain ODE)"]
    return DecodeResult(frames=frames, fps=fps, code=code, report=report, latents=latents.cpu())


def output_frames_for(code: Code, segments=None) -> int:
    """How many frames `decode` writes for `code` and a `--segments` range (to check an output first)."""
    first, stop = parse_segment_range(segments, code.n_segments)
    starts = [s.start for s in code.segment_list]
    return starts[stop - 1] + code.frames - starts[first]


# -- seams --------------------------------------------------------------------------------------------


def seam_report(reference: np.ndarray, decoded: np.ndarray, starts, seg_frames: int) -> dict:
    """How visible the seams are. Junctions are the frame transitions t -> t+1 where the set of
    segments covering the frame changes; boundary frames are the frames on either side of one.
    Reports PSNR over boundary frames and over the other frames, and the mean absolute frame-to-frame
    change (0..255) over junction transitions and over the others, for the decoded clip and the source
    (`excess_change_*` = decoded minus source: what the codec adds)."""
    from .metrics import psnr

    ref, dec = np.asarray(reference), np.asarray(decoded)
    if ref.shape != dec.shape:
        raise ValueError(f"reference {ref.shape} and decoded {dec.shape} differ")
    T = ref.shape[0]
    cover = _coverage(starts, seg_frames, T)
    junctions = [t for t in range(T - 1) if cover[t] != cover[t + 1]]
    inside = [t for t in range(T - 1) if cover[t] == cover[t + 1]]
    boundary = sorted({t for j in junctions for t in (j, j + 1)})
    interior = [t for t in range(T) if t not in set(boundary)]

    def change(x, ts):
        if not ts:
            return None
        return float(np.mean([np.mean(np.abs(x[t + 1].astype(np.int16) - x[t].astype(np.int16))) for t in ts]))

    def p(ts):
        return psnr(ref[ts], dec[ts]) if ts else None

    out = {
        "segments": len(starts), "junctions": len(junctions), "boundary_frames": len(boundary),
        "psnr_boundary": p(boundary), "psnr_interior": p(interior),
        "change_boundary": change(dec, junctions), "change_interior": change(dec, inside),
        "source_change_boundary": change(ref, junctions), "source_change_interior": change(ref, inside),
    }
    for kind in ("boundary", "interior"):
        a, b = out[f"change_{kind}"], out[f"source_change_{kind}"]
        out[f"excess_change_{kind}"] = None if a is None or b is None else a - b
    return out


def segment_info(code: Code) -> dict:
    """The segment facts `describe` / `info` report."""
    starts = [int(s.start) for s in code.segment_list]
    overlaps = [code.frames - (b - a) for a, b in zip(starts, starts[1:])]
    return {
        "segments": code.n_segments, "segment_frames": int(code.frames), "segment_starts": starts,
        "segment_overlaps": overlaps, "segment_step_sizes": [float(s.step_size) for s in code.segment_list],
    }

