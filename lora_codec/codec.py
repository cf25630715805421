"""The codec's public API: encode a clip into a code, decode a code into frames, describe a code.

Data flows video -> latents -> fit -> symbols -> bytes (`encode`) and back the mirror way (`decode`).
Each step lives in its own module; this file only sequences them, pipeline-style:

    encode: 1 backbone  2 read + convert clip  3 latents + caption  4 adapter  5 fit (stages 1-2)
            6 quantise (+ rate control to a byte target)  6b optional refinement track (refine.py)
            7 write the code
    decode: 1 parse the code  2 backbone (+ fingerprint check)  3 adapter with theta_hat
            4 noise from the seed  5 sample (plain ODE, or replay of the refinement track)  6 VAE decode
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import bitstream, refine
from . import refine as _refine_mod  # `decode` has a parameter named `refine`
from .adapter import Adapter, AdapterConfig, dequantise, quantise, step_from_raw
from .backbones import Backbone, Geometry, load_backbone
from .bitstream import Code
from .errors import BackboneError, DecodeError, LoraCodecError
from .fit import FitConfig, Fitter, FitProgress
from .sampling import Velocity, initial_noise, sample_ode, sigma_schedule

NOISE_MODES = {"random": 0, "seed": 1}
# The code's noise-mode flag says whether the fit used the decoder's own noise; a 'mix' fit did, in part.
FIT_NOISE_FLAG = {"random": 0, "seed": 1, "mix": 1}


# Measured on the small backbone (docs/RESULTS.md, section small): the refinement track's stochastic steps
# leave the trajectory a 'seed' fit was made for (19.6 dB plain ODE, 16.1-16.6 dB with the track).
def refine_seed_note(noise_mode: str) -> str:
    """The note for a refinement track recorded on a fit that used the decoder's own noise ('seed', or
    'mix' for part of its samples)."""
    how = "for part of its samples (noise mode 'mix')" if noise_mode == "mix" else "(noise mode 'seed')"
    return (f"this fit uses the decoder's own noise {how}; a refinement track was measured to lower quality "
            "for such codes - decode with --refine none, or encode with --noise-mode random to use the track")


@dataclasses.dataclass
class EncodeSettings:
    """Everything a user can set for an encode. `None` means "the backbone's default".

    fit_steps: total optimiser steps (split between stage 1 and 2 in the backbone's default ratio);
    rate_lambda / target_kb: rate control (one or the other); sample_steps: the decoder's default
    number of sampling steps stored in the code; seed: the decoder's noise seed and the fit's seed;
    size: (width, height) to code at (a backbone with `free_size`: multiples of 16 within its pixel
    cap; None = native, transposed for portrait sources)."""

    model: str = "auto"
    caption: str = ""
    seed: int = 0
    fit_steps: int | None = None
    stage1_steps: int | None = None
    stage2_steps: int | None = None
    rate_lambda: float | None = None
    target_kb: float | None = None
    sample_steps: int | None = None
    shift: float | None = None
    guidance: float | None = None
    noise_mode: str | None = None  # 'random' | 'seed' | 'mix'; None = the recipe's
    recipe: str | None = None  # fit recipe (recipes.py): 'default' (None) or 'paper'; the options above override it
    measure: bool = True  # decode the written code as a receiver would and report its PSNR (report['decoded_psnr'])
    rank: int | None = None
    theta_length: int | None = None
    proj_seed: int = 0
    batch: int | None = None
    lr1: float | None = None
    lr2: float | None = None
    start_seconds: float = 0.0
    size: tuple[int, int] | None = None  # coded (width, height) in pixels; None = the backbone's native size
    finetune_steps: int | None = None  # fine-tuning after a rate-control step change
    # refinement track (METHOD.md section 5; refine.py): None = no track
    refine_n: int | None = None  # candidates per step, a power of two in 2..65536
    refine_steps: int | None = None  # the schedule the track is recorded on (default: sample_steps)
    refine_select: str = "gumbel"  # 'gumbel' (sample by the importance weights) or 'greedy' (argmax)
    refine_indexed: str | tuple[int, int] | None = None  # steps carrying an index, 'START:STOP' (default all but the last)


@dataclasses.dataclass
class EncodeResult:
    data: bytes
    code: Code
    report: dict
    geometry: Geometry
    frames: np.ndarray  # the clip as coded (uint8 [T, H, W, 3])
    latents: torch.Tensor  # its normalised latents (CPU)
    notes: list[str]
    refined_latents: torch.Tensor | None = None  # the refinement track's final latents (CPU), if recorded
    decoded: "DecodeResult | None" = None  # the code decoded as a receiver would (when measured)


@dataclasses.dataclass(frozen=True)
class RefinePlan:
    """A validated refinement-track request (see `refine_plan`)."""

    n: int
    log2_n: int
    steps: int
    first: int
    count: int
    select: str

    @property
    def indexed(self) -> tuple[int, int]:
        return self.first, self.first + self.count

    def section_bytes(self) -> int:
        return refine.section_bytes(self.steps, self.log2_n, self.first, self.count)


def refine_plan(settings: EncodeSettings, default_steps: int) -> RefinePlan | None:
    """Validate the refinement settings (RefinementError, before any fitting) -> plan or None."""
    if settings.refine_n is None:
        if settings.refine_steps is not None or settings.refine_indexed is not None:
            raise refine.RefinementError("--refine-steps / --refine-indexed need --refine-n")
        return None
    log2_n = refine.check_n(settings.refine_n)
    steps = refine.check_steps(settings.refine_steps if settings.refine_steps is not None else default_steps)
    select = refine.check_select(settings.refine_select)
    first, count = refine.resolve_indexed(steps, settings.refine_indexed)
    return RefinePlan(n=int(settings.refine_n), log2_n=log2_n, steps=steps, first=first, count=count, select=select)


def check_settings(settings: EncodeSettings, backbone: Backbone) -> None:
    """Refuse settings no fit can use (LoraCodecError), before the clip is read: the refinement
    request, the caption's length, and rate control that is not a number (NaN, infinity)."""
    import math

    refine_plan(settings, settings.sample_steps or backbone.defaults.sample_steps)
    if settings.caption is None:
        settings.caption = ""
    if len(settings.caption.encode("utf-8")) > 4096:
        raise LoraCodecError("the caption is longer than 4096 bytes")
    if settings.target_kb is not None and not math.isfinite(float(settings.target_kb)):
        raise LoraCodecError(f"--target-kb must be a size in kB, got {settings.target_kb}")
    if settings.rate_lambda is not None and not (math.isfinite(float(settings.rate_lambda))
                                                 and settings.rate_lambda >= 0):
        raise LoraCodecError(f"--lambda must be a number >= 0, got {settings.rate_lambda}")
    if settings.batch is not None and not settings.batch >= 1:
        raise LoraCodecError(f"--batch must be at least 1 (fit samples per step), got {settings.batch}")


@dataclasses.dataclass
class RefineResult:
    data: bytes  # the code with its new refinement track
    code: Code
    report: dict
    latents: torch.Tensor  # the track's final latents (CPU): what `decode` replays


@dataclasses.dataclass
class DecodeResult:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: Fraction
    code: Code
    report: dict
    latents: torch.Tensor


def fit_config_for(backbone: Backbone, s: EncodeSettings) -> FitConfig:
    """The fit's settings: the backbone's defaults, under the chosen recipe, under explicit settings."""
    from .recipes import apply_recipe

    d = apply_recipe(backbone.defaults, s.recipe)
    stage1, stage2 = d.stage1_steps, d.stage2_steps
    if s.fit_steps is not None:
        if s.fit_steps < 1:
            raise LoraCodecError("--steps must be >= 1")
        frac = stage1 / max(1, stage1 + stage2)
        stage1 = int(round(s.fit_steps * frac))
        stage2 = s.fit_steps - stage1
    if s.stage1_steps is not None:
        stage1 = s.stage1_steps
    if s.stage2_steps is not None:
        stage2 = s.stage2_steps
    ramp = min(d.ramp_steps, max(1, stage2))
    return FitConfig(
        stage1_steps=stage1,
        stage2_steps=stage2,
        lr1=s.lr1 if s.lr1 is not None else d.lr1,
        lr2=s.lr2 if s.lr2 is not None else d.lr2,
        batch=s.batch if s.batch is not None else d.batch,
        rate_lambda=s.rate_lambda if s.rate_lambda is not None else d.rate_lambda,
        ramp_steps=ramp,
        init_raw_step=d.init_raw_step,
        noise_mode=s.noise_mode or d.noise_mode,
        seed_fraction=d.seed_fraction,
        timesteps=d.timesteps,
        shift=s.shift if s.shift is not None else d.shift,
        grid_steps=s.sample_steps or d.sample_steps,
        lr_schedule=d.lr_schedule,
        warmup_steps=int(round(d.warmup_frac * (stage1 + stage2))),
        min_lr_frac=d.min_lr_frac,
        init_scale=d.init_scale,
        seed=s.seed,
    )


def adapter_config_for(backbone: Backbone, s: EncodeSettings) -> AdapterConfig:
    d = backbone.defaults
    rank = s.rank if s.rank is not None else d.rank
    length = s.theta_length if s.theta_length is not None else d.theta_length
    if not 1 <= rank <= 64:
        raise LoraCodecError("rank must be in 1..64")
    if not 1 <= length <= (1 << 24):
        raise LoraCodecError("theta length must be in 1..16777216")
    return AdapterConfig(rank=rank, theta_length=length, proj_seed=s.proj_seed)


def measure_decode(frames: np.ndarray, run_decode: Callable[[], "DecodeResult"]) -> tuple[dict, "DecodeResult"]:
    """Run `run_decode` (a receiver's decode of a code) and measure it against `frames` (uint8 [N, H, W, 3], the
    coded frames): ({'decoded_psnr': dB RGB PSNR, 'measure_seconds': s}, the decode). The encoders report this."""
    from .metrics import psnr

    t0 = time.perf_counter()
    dec = run_decode()
    return {"decoded_psnr": round(float(psnr(frames, dec.frames)), 4),
            "measure_seconds": round(time.perf_counter() - t0, 3)}, dec


class EncodeSession:
    """One clip being encoded. Holds the prepared latents, the adapter and the fitter so that a fit
    can run in slices (the web app runs it across several GPU calls) and be saved and resumed.

    Use: `session = EncodeSession.start(path, settings)`; `session.fit(...)` as often as wanted;
    `session.finish()` -> EncodeResult; always `session.close()` (detaches the adapter)."""

    def __init__(self, backbone: Backbone, settings: EncodeSettings, frames: np.ndarray, fps: Fraction,
                 src: tuple[int, int, int], notes: list[str], caption_cache=None):
        from .video import video_to_tensor

        self.backbone = backbone
        self.settings = settings
        self.notes = notes
        self.fps = fps
        self.src = src
        self.frames = frames
        self.geometry = Geometry(frames.shape[0], frames.shape[1], frames.shape[2])
        backbone.check_geometry(self.geometry)
        self.sample_steps = settings.sample_steps or backbone.defaults.sample_steps
        self.refine_plan = refine_plan(settings, self.sample_steps)
        self.shift = settings.shift if settings.shift is not None else backbone.defaults.shift
        self.guidance = settings.guidance if settings.guidance is not None else backbone.defaults.guidance
        # 3. latents and caption
        self.latents = backbone.encode_video(video_to_tensor(frames))
        self.text_emb = backbone.embed_caption(settings.caption, cache_file=caption_cache)
        # 4. adapter
        self.adapter_config = adapter_config_for(backbone, settings)
        self.fit_config = fit_config_for(backbone, settings)
        self.adapter = Adapter(backbone.transformer, self.adapter_config, init_seed=settings.seed)
        if backbone.gradient_checkpointing:
            backbone.transformer.enable_gradient_checkpointing()
        noise = initial_noise(settings.seed, tuple(self.latents.shape))
        self.fitter = Fitter(self.adapter, self.latents, self.text_emb, self.fit_config, seed_noise=noise,
                             device=backbone.device, dtype=backbone.dtype, data_digest=self._source_digest())
        self._closed = False

    def _source_digest(self) -> str:
        """What a fit state belongs to: the coded frames, caption, backbone weights and geometry (not the
        latents, which a GPU VAE need not reproduce bit for bit across calls)."""
        import hashlib

        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.frames).tobytes())
        h.update(self.settings.caption.encode("utf-8"))
        h.update(self.backbone.fingerprint)
        h.update(repr((self.geometry, self.fps)).encode())
        return h.hexdigest()[:32]

    # -- 1-2: start from a file ---------------------------------------------------------------
    @classmethod
    def start(cls, video, settings: EncodeSettings, *, backbone: Backbone | None = None, limits=None,
              caption_cache=None) -> "EncodeSession":
        """Read `video` (a path or `video.Clip`), convert it to the coded geometry (`settings.size`, or
        the backbone's native size) and prepare the fit. `caption_cache`: a file that keeps the caption
        embedding across sessions of one job (the web app's GPU calls; `Backbone.embed_caption`)."""
        from .video import Clip, Limits, fit_to_geometry, read_video

        backbone = backbone or load_backbone(settings.model)
        check_settings(settings, backbone)  # fail before reading
        if isinstance(video, Clip):
            clip = video
        else:
            clip = read_video(video, start_seconds=settings.start_seconds, max_frames=backbone.native.frames,
                              limits=limits or Limits())
        geom = backbone.coded_geometry(clip.frames.shape[0], clip.frames.shape[1], clip.frames.shape[2],
                                       size=settings.size)
        frames = fit_to_geometry(clip.frames, geom.frames, geom.height, geom.width)
        notes = list(clip.notes)
        if geom.frames < clip.frames.shape[0]:
            notes.append(f"coded {geom.frames} of {clip.frames.shape[0]} frames (4k+1, at most {backbone.native.frames})")
        what = "one picture" if geom.frames == 1 else f"{geom.frames} frames at {float(clip.fps):.3g} fps"
        notes.append(f"coded geometry {geom.width}x{geom.height}, {what} (source {clip.src_width}x{clip.src_height})")
        mode = fit_config_for(backbone, settings).noise_mode
        if settings.refine_n is not None and mode != "random":
            notes.append(refine_seed_note(mode))
        return cls(backbone, settings, frames, clip.fps, (clip.src_width, clip.src_height, clip.src_frames), notes,
                   caption_cache=caption_cache)

    # -- 5: fit ---------------------------------------------------------------------------------
    def fit(self, *, callback: Callable[[FitProgress], None] | None = None, max_steps: int | None = None,
            max_seconds: float | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        return self.fitter.run(callback=callback, max_steps=max_steps, max_seconds=max_seconds, should_stop=should_stop)

    def extend(self, extra_steps: int) -> None:
        """Keep improving: lengthen stage 2 by `extra_steps` (the fit is anytime)."""
        self.fit_config.stage2_steps += int(extra_steps)

    def save_state(self, path) -> None:
        """Write the fit state atomically (a temporary file renamed over `path`): a kill at any moment
        leaves either the previous state or the new one, never a torn file."""
        import os

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        self.fitter.save(tmp, extra={"settings": dataclasses.asdict(self.settings)})
        os.replace(tmp, path)

    def load_state(self, path) -> None:
        tensors, meta = Fitter.read_state(path)
        saved = meta.get("extra", {}).get("settings", {})
        cfg = meta.get("config", {})
        # A resumed fit keeps the schedule it was started with (it may have been extended).
        for key in ("stage1_steps", "stage2_steps"):
            if key in cfg:
                setattr(self.fit_config, key, max(int(cfg[key]), getattr(self.fit_config, key))
                        if key == "stage2_steps" else int(cfg[key]))
        if saved and saved.get("seed") != self.settings.seed:
            raise LoraCodecError("the fit state was made with another --seed")
        self.fitter.load_state(tensors, meta)

    # -- 6-7: quantise and write -------------------------------------------------------------------
    def make_code(self, symbols: np.ndarray, step: float, sections: dict | None = None) -> Code:
        fps = Fraction(self.fps).limit_denominator(1 << 20)
        return Code(
            model=self.backbone.name,
            fingerprint=self.backbone.fingerprint,
            targets=tuple(self.adapter_config.targets),
            rank=self.adapter_config.rank,
            theta_length=self.adapter_config.theta_length,
            proj_seed=self.adapter_config.proj_seed,
            frames=self.geometry.frames,
            height=self.geometry.height,
            width=self.geometry.width,
            fps_num=fps.numerator,
            fps_den=fps.denominator,
            src_width=self.src[0],
            src_height=self.src[1],
            src_frames=self.src[2],
            noise_seed=self.settings.seed,
            noise_mode=FIT_NOISE_FLAG[self.fit_config.noise_mode],
            steps=self.sample_steps,
            shift=self.shift,
            guidance=self.guidance,
            caption=self.settings.caption,
            step_size=step,
            symbols=symbols,
            sections=dict(sections or {}),
        )

    def code_bytes(self, step: float | None = None) -> bytes:
        step = self.fitter.current_step_size() if step is None else step
        return bitstream.write_code(self.make_code(quantise(self.adapter.theta, step), step))

    def _set_step(self, step: float) -> None:
        self.fitter.set_step_size(step)

    def hit_target(self, target_bytes: int, *, finetune_steps: int, callback=None, reserve: int = 0) -> float:
        """Rate control: choose the step size whose code lands in [0.9 T, T] bytes, fine-tune theta
        briefly on that grid (step frozen), then re-check. Returns the step size. `reserve` bytes
        (the refinement track, whose size is known in advance) count towards the total."""
        lo_bytes = int(math.floor(0.9 * target_bytes))

        def size(step: float) -> int:
            return len(self.code_bytes(step)) + reserve

        def search() -> float:
            lo, hi = math.log(1e-6), math.log(1e3)  # log step; size falls as step grows
            if size(math.exp(hi)) > target_bytes:
                track = f", including the {reserve}-byte refinement track" if reserve else ""
                raise LoraCodecError(
                    f"--target-kb {target_bytes / 1000:g} is below the smallest code for this clip and caption "
                    f"({size(math.exp(hi))} bytes{track})")
            best = None
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                n = size(math.exp(mid))
                if n > target_bytes:
                    lo = mid
                else:
                    hi = mid
                    best = math.exp(mid)
                    if n >= lo_bytes:
                        break
            step = best if best is not None else math.exp(hi)
            return step_from_raw(math.log(math.expm1(step)) if step < 20 else step)

        step = search()
        if finetune_steps > 0:
            self._set_step(step)
            self.fitter.raw_step.requires_grad_(False)
            try:
                if self.fitter.stage == 1 or self.fitter.optimizer is None:
                    self.fitter.step = max(self.fitter.step, self.fit_config.stage1_steps)
                for _ in range(finetune_steps):
                    progress = self.fitter.train_step()
                    if callback is not None:
                        callback(progress)
            finally:
                self.fitter.raw_step.requires_grad_(True)
            step = search()
        self._set_step(step)
        return step

    def finish(self, *, callback=None, progress: Callable[[int, int], None] | None = None,
               measure: bool | None = None, decode_progress: Callable[[int, int], None] | None = None) -> EncodeResult:
        """Quantise (with rate control if a target is set), record the refinement track if asked
        (`progress(i, n)` per sampling step), write the code, report every byte; then (`measure`,
        default `settings.measure`) decode the written code exactly as a receiver would
        (`decode_progress(i, n)` per step) and report its PSNR against the coded frames
        (report['decoded_psnr'], dB; the decode is in `EncodeResult.decoded`)."""
        s = self.settings
        plan = self.refine_plan
        step = self.fitter.current_step_size()
        if s.target_kb is not None:
            finetune = s.finetune_steps if s.finetune_steps is not None else max(5, self.fit_config.stage2_steps // 5)
            step = self.hit_target(int(s.target_kb * 1000), finetune_steps=finetune, callback=callback,
                                   reserve=plan.section_bytes() if plan else 0)
        symbols = quantise(self.adapter.theta, step)
        code = self.make_code(symbols, step)
        extra: dict = {}
        refined = None
        if plan is not None:
            code, rec = self.record_track(code, plan, progress=progress)
            refined = rec.latents.cpu()
            extra = _record_report(rec, self.latents)
        data = bitstream.write_code(code)
        report = describe(data)
        report.update(
            steps=self.fitter.step,
            fit_seconds=round(self.fitter.elapsed, 3),
            final_mse=None if self.fitter.last is None else self.fitter.last.mse,
            notes=list(self.notes),
            **extra,
        )
        decoded = None
        if self.settings.measure if measure is None else measure:
            quality, decoded = self.measure(data, progress=decode_progress)
            report.update(quality)
        return EncodeResult(data=data, code=code, report=report, geometry=self.geometry, frames=self.frames,
                            latents=self.latents, notes=list(self.notes), refined_latents=refined, decoded=decoded)

    def record_track(self, code: Code, plan: RefinePlan, *, progress=None) -> tuple[Code, "refine.RecordResult"]:
        """Record a refinement track for `code` against this clip with the decoder's exact adapter.

        The fitting adapter is taken off the transformer for that (the decoder's adapter is built from
        the code alone), then put back with the fit's whole state, so the fit can go on afterwards."""
        with self._fit_adapter_off():
            return compute_track(self.backbone, code, self.latents, n=plan.n, steps=plan.steps, select=plan.select,
                                 indexed=plan.indexed, gumbel_seed=self.settings.seed, progress=progress)

    @contextlib.contextmanager
    def _fit_adapter_off(self):
        """Take the fitting adapter off the transformer (so that the decoder's exact adapter, built from
        a code alone, can go on it), then put it back with the fit's whole state, so the fit can go on."""
        bb = self.backbone
        tensors, meta = self.fitter.state_tensors()
        meta = json.loads(json.dumps(meta))  # as a saved state holds it (load_state compares JSON values)
        if bb.gradient_checkpointing:
            bb.transformer.disable_gradient_checkpointing()
        bb.pipe.transformer = self.adapter.detach()
        try:
            yield
        finally:
            self.adapter = Adapter(bb.transformer, self.adapter_config, init_seed=self.settings.seed)
            self.fitter.adapter = self.adapter
            self.fitter.load_state(tensors, meta)
            if bb.gradient_checkpointing:
                bb.transformer.enable_gradient_checkpointing()

    def decode_code(self, data: bytes, *, progress: Callable[[int, int], None] | None = None) -> "DecodeResult":
        """Decode `data` exactly as a receiver would (`decode`: the code's own adapter, noise and schedule,
        its refinement track replayed), in the middle of the fit if need be (the fit goes on after)."""
        with self._fit_adapter_off():
            return decode(data, backbone=self.backbone, progress=progress)

    def measure(self, data: bytes | None = None, *, progress=None) -> tuple[dict, "DecodeResult"]:
        """The decoded quality of a code for this clip (default: the code the fit's current state gives):
        ({'decoded_psnr': dB RGB PSNR against the coded frames, 'measure_seconds': s}, the decode)."""
        return measure_decode(self.frames, lambda: self.decode_code(self.code_bytes() if data is None else data,
                                                                    progress=progress))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.backbone.gradient_checkpointing:
                self.backbone.transformer.disable_gradient_checkpointing()
            restored = self.adapter.detach()
            self.backbone.pipe.transformer = restored

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def encode(video, settings: EncodeSettings | None = None, *, callback=None, resume=None, save_state=None,
           max_steps: int | None = None, backbone: Backbone | None = None, limits=None) -> EncodeResult | None:
    """Encode a clip (path or `video.Clip`) into a code. Returns None when stopped early by
    `max_steps` (the state is then written to `save_state`). Codes at most the backbone's native length
    (the clip's first frames); `segments.encode` codes a clip of any length (and pictures) as segments."""
    settings = settings or EncodeSettings()
    with EncodeSession.start(video, settings, backbone=backbone, limits=limits) as session:
        if resume is not None:
            session.load_state(resume)
        done = session.fit(callback=callback, max_steps=max_steps)
        if save_state is not None:
            session.save_state(save_state)
        if not done:
            return None
        return session.finish(callback=callback)


# -------------------------------------------------------------------------------------------------


def minimum_code_bytes(backbone: Backbone, caption: str = "", settings: EncodeSettings | None = None, *,
                       geometry: Geometry | None = None, fps=None, src: tuple[int, int, int] | None = None) -> int:
    """The smallest code (whole file, in bytes) an encode of this backbone, caption and settings can
    produce, known before any fitting: header + stored caption + the smallest prior (every symbol
    equal: one histogram bin) + an empty payload + the refinement track's fixed size (`settings.refine_n`).
    A very high rate weight or a very coarse step tends to it; no code is smaller (docs/FORMAT.md).

    `geometry` (coded frames, height, width), `fps` (a Fraction or float) and `src` (source width,
    height, frames) make it exact for one clip (`EncodeSession` has them as `geometry`, `fps`, `src`);
    without them the clip-dependent header fields count their smallest size (1 byte each), so the result
    is a lower bound within a few bytes. Only `backbone.name` and `backbone.defaults` are used (no
    weights). Raises LoraCodecError / RefinementError for invalid settings."""
    s = dataclasses.replace(settings) if settings is not None else EncodeSettings()
    s.caption = caption or ""
    if len(s.caption.encode("utf-8")) > bitstream.MAX_CAPTION_BYTES:
        raise LoraCodecError(f"the caption is longer than {bitstream.MAX_CAPTION_BYTES} bytes")
    d = backbone.defaults
    sample_steps = s.sample_steps or d.sample_steps
    plan = refine_plan(s, sample_steps)
    adapter = adapter_config_for(backbone, s)
    fit = fit_config_for(backbone, s)
    geom = geometry or Geometry(1, 16, 16)
    rate = Fraction(fps if fps is not None else 1).limit_denominator(1 << 20)
    src_w, src_h, src_n = src if src is not None else (0, 0, 0)
    code = Code(model=backbone.name, fingerprint=bytes(8), targets=tuple(adapter.targets), rank=adapter.rank,
                theta_length=adapter.theta_length, proj_seed=adapter.proj_seed, frames=geom.frames,
                height=geom.height, width=geom.width, fps_num=rate.numerator, fps_den=rate.denominator,
                src_width=src_w, src_height=src_h, src_frames=src_n, noise_seed=s.seed,
                noise_mode=NOISE_MODES[fit.noise_mode], steps=sample_steps,
                shift=s.shift if s.shift is not None else d.shift,
                guidance=s.guidance if s.guidance is not None else d.guidance, caption=s.caption, step_size=1.0,
                symbols=np.zeros(adapter.theta_length, dtype=np.int32))
    return len(bitstream.write_code(code)) + (plan.section_bytes() if plan else 0)


def describe(data: bytes | str) -> dict:
    """`info`: sizes of every part of a code and what it holds (no backbone needed)."""
    from .segments import segment_info

    raw = bitstream.load_code_bytes(data)
    code = bitstream.read_code(raw)
    sizes = bitstream.size_report(raw)
    track = refine.read_track(code)
    frames = code.output_frames  # a multi-segment code: the whole video (each segment has code.frames)
    seconds = frames * code.fps_den / code.fps_num
    out = dict(sizes)
    by_tag = out.pop("section_bytes_by_tag", None) or {}
    out.update(segment_info(code))
    out.update(
        model=code.model,
        fingerprint=code.fingerprint.hex(),
        frames=frames,
        height=code.height,
        width=code.width,
        fps=code.fps_num / code.fps_den,
        src_width=code.src_width,
        src_height=code.src_height,
        src_frames=code.src_frames,
        theta_length=code.theta_length,
        rank=code.rank,
        proj_seed=code.proj_seed,
        targets=list(code.targets),
        noise_seed=code.noise_seed,
        noise_mode=[k for k, v in NOISE_MODES.items() if v == code.noise_mode][0] if code.noise_mode in NOISE_MODES.values() else code.noise_mode,
        sample_steps=code.steps,
        shift=code.shift,
        guidance=code.guidance,
        caption=code.caption,
        step_size=code.step_size,
        seconds=seconds,
        kbytes_per_second=sizes["total_bytes"] / 1000 / seconds,
        bits_per_pixel=sizes["total_bytes"] * 8 / (frames * code.height * code.width),
        # refinement track (None / 0 when the code has none): refine_bits = indexed steps x log2 N;
        # refine_bytes = the whole section in the file (tag, length, header, indices)
        refine_n=track.n if track else None,
        refine_steps=track.steps if track else None,
        refine_bits=track.bits if track else 0,
        refine_bytes=by_tag.get(bitstream.SECTION_REFINEMENT, 0),
        refine_indexed=[track.first, track.first + track.count] if track else None,
        refine_shift=track.shift if track else None,
        refine_select=track.select if track else None,
    )
    return out


def attach_code_adapter(backbone: Backbone, code: Code) -> Adapter:
    """The decoder's exact adapter for a code: structure from the code, theta_hat = q * s (float32, CPU)."""
    if code.model != backbone.name:
        raise BackboneError(f"this code was made with the '{code.model}' backbone; it cannot be decoded with '{backbone.name}'")
    if code.fingerprint not in backbone.fingerprints:  # any fingerprint version (docs/FORMAT.md)
        raise BackboneError(
            f"this code was made with other '{code.model}' weights (fingerprint {code.fingerprint.hex()}, "
            f"loaded {backbone.fingerprint.hex()}); decoding it would give garbage")
    cfg = AdapterConfig(targets=tuple(code.targets), rank=code.rank, theta_length=code.theta_length,
                        proj_seed=code.proj_seed)
    adapter = Adapter(backbone.transformer, cfg)
    adapter.set_theta(dequantise(code.symbols, code.step_size))
    return adapter


def _code_velocity(backbone: Backbone, code: Code, adapter: Adapter, caption: str) -> Velocity:
    """The decoder's velocity for a code (shared by `decode` and the track's encoder, so that both
    run the very same model calls)."""
    emb = backbone.embed_caption(caption)
    uncond = backbone.embed_caption("") if code.guidance != 1.0 else None
    return Velocity(adapter.model, emb, guidance=code.guidance, uncond_emb=uncond, dtype=backbone.dtype,
                    device=backbone.device)


def compute_track(backbone: Backbone, code: Code, latents: torch.Tensor, *, n: int, steps: int | None = None,
                  select: str = "gumbel", indexed=None, gumbel_seed: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  block_normals: int | None = None) -> tuple[Code, "refine.RecordResult"]:
    """Record a refinement track for `code` against the clip's normalised `latents` (what
    `backbone.encode_video` gives for the coded frames) and return the code with it (section 1,
    replacing any track it had) plus the recording (indices, final latents, timings).

    Uses the decoder's exact adapter (`attach_code_adapter`) and noise; the backbone's transformer
    must not carry another adapter. `steps`: the track's schedule (default: the code's steps);
    `indexed`: which steps carry an index (`refine.resolve_indexed`)."""
    if code.segments:
        raise refine.RefinementError("a refinement track is for one-segment codes; this code has "
                                     f"{code.n_segments} segments")
    log2_n = refine.check_n(n)
    steps = refine.check_steps(code.steps if steps is None else steps)
    select = refine.check_select(select)
    first, count = refine.resolve_indexed(steps, indexed)
    geom = Geometry(code.frames, code.height, code.width)
    backbone.check_geometry(geom)
    shape = backbone.latent_shape(geom)
    if tuple(latents.shape) != tuple(shape):
        raise refine.RefinementError(f"the clip's latents {tuple(latents.shape)} do not match the code's {tuple(shape)}")
    adapter = attach_code_adapter(backbone, code)
    try:
        velocity = _code_velocity(backbone, code, adapter, code.caption)
        noise = initial_noise(code.noise_seed, shape)
        rec = refine.record(velocity, noise, latents, sigma_schedule(steps, code.shift), seed=code.noise_seed, n=n,
                            first=first, count=count, select=select,
                            gumbel_seed=code.noise_seed if gumbel_seed is None else gumbel_seed,
                            progress=progress, block_normals=block_normals)
    finally:
        backbone.pipe.transformer = adapter.detach()
    track = refine.Track(steps=steps, shift=code.shift, log2_n=log2_n, first=first,
                         indices=tuple(int(i) for i in rec.indices), select=select)
    sections = dict(code.sections)
    sections[bitstream.SECTION_REFINEMENT] = refine.pack_track(track, code.shift)
    return dataclasses.replace(code, sections=sections), rec


def _record_report(rec: "refine.RecordResult", latents: torch.Tensor) -> dict:
    x = rec.latents.detach().cpu().float()
    return dict(
        refine_seconds=round(rec.seconds, 3),
        refine_select_seconds=round(rec.select_seconds, 3),
        refine_candidates_per_second=(rec.candidates / rec.select_seconds) if rec.select_seconds > 0 else None,
        refine_latent_mse=float(torch.mean((x - latents.float()) ** 2)),
    )


def clip_latents(video, code: Code, *, backbone: Backbone, start_seconds: float = 0.0, limits=None) -> torch.Tensor:
    """The normalised latents of a clip as the encoder coded it (same reading, resizing and cropping as
    `EncodeSession.start`); the clip must give the code's geometry."""
    from .video import Clip, Limits, fit_to_geometry, read_video, video_to_tensor

    if isinstance(video, Clip):
        clip = video
    else:
        clip = read_video(video, start_seconds=start_seconds, max_frames=backbone.native.frames,
                          limits=limits or Limits())
    geom = backbone.coded_geometry(clip.frames.shape[0], clip.frames.shape[1], clip.frames.shape[2],
                                   size=(code.width, code.height) if backbone.free_size else None)
    if clip.frames.shape[0] < code.frames or (geom.height, geom.width) != (code.height, code.width):
        raise refine.RefinementError(
            f"the clip ({clip.frames.shape[0]} frames, coded as {geom.width}x{geom.height}) does not match the code "
            f"({code.frames} frames, {code.width}x{code.height})")
    frames = fit_to_geometry(clip.frames, code.frames, code.height, code.width)
    return backbone.encode_video(video_to_tensor(frames))


def add_refinement(data: bytes | str, video=None, *, latents: torch.Tensor | None = None, n: int,
                   steps: int | None = None, select: str = "gumbel", indexed=None, seed: int | None = None,
                   backbone: Backbone | None = None, start_seconds: float = 0.0, limits=None,
                   progress: Callable[[int, int], None] | None = None) -> RefineResult:
    """Add (or replace) the refinement track of an existing code, given the original clip (`video`: a
    path or `video.Clip`, read like the encoder did) or its normalised `latents`. `seed` seeds the
    Gumbel selection noise (default: the code's noise seed)."""
    raw = bitstream.load_code_bytes(data)
    code = bitstream.read_code(raw)
    refine.check_n(n)
    refine.check_select(select)
    refine.resolve_indexed(refine.check_steps(code.steps if steps is None else steps), indexed)
    if backbone is None:
        backbone = load_backbone(code.model)
    if latents is None:
        if video is None:
            raise refine.RefinementError("a refinement track needs the original clip (or its latents)")
        latents = clip_latents(video, code, backbone=backbone, start_seconds=start_seconds, limits=limits)
    new, rec = compute_track(backbone, code, latents, n=n, steps=steps, select=select, indexed=indexed,
                             gumbel_seed=seed, progress=progress)
    out = bitstream.write_code(new)
    report = describe(out)
    report.update(_record_report(rec, latents))
    return RefineResult(data=out, code=new, report=report, latents=rec.latents.cpu())


def require_finite(x: torch.Tensor, what: str) -> None:
    """Raise DecodeError when `x` holds NaN or infinity (a hostile code or a numeric failure): such values
    would silently become black frames."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise DecodeError(f"decoding failed: {what} hold {bad} of {x.numel()} values that are not finite numbers "
                          "(NaN or infinity); the code is damaged or was not made for this decoder")


def decode(data: bytes | str, *, steps: int | None = None, caption: str | None = None, backbone: Backbone | None = None,
           progress: Callable[[int, int], None] | None = None, sampler=None, refine: str | int = "all",
           segments=None, merge=None, weights=None, merge_names=None) -> DecodeResult:
    """Decode a code (binary or text form) into frames. `steps` overrides the stored default,
    `caption` the stored caption (editing). `refine`: 'all' replays the code's refinement track if it
    has one (on the track's own schedule), 'none' ignores it (plain ODE with `steps`), K replays the
    first K indexed steps and continues with the ODE on the track's schedule.
    `sampler(velocity, noise, code) -> latents` replaces both.

    A multi-segment code decodes to one continuous video (`segments`: only a range, e.g. '2-3',
    1-based); `merge`: other codes whose adapters are applied with this one's at once, `weights` one
    per code, this one's first (editing; segments.py and merge.py)."""
    from .video import tensor_to_video

    mode = _refine_mod.parse_refine(refine)
    # 1. parse
    raw = bitstream.load_code_bytes(data)
    code = bitstream.read_code(raw)
    if code.segments or merge or weights is not None:
        from .segments import decode_segments

        if sampler is not None:
            raise LoraCodecError("a custom sampler decodes one-segment codes without merges only")
        return decode_segments(raw, code, backbone=backbone or load_backbone(code.model), steps=steps,
                               caption=caption, progress=progress, segments=segments, merge=merge, weights=weights,
                               merge_names=merge_names, refine=refine)
    if segments is not None:
        from .segments import parse_segment_range

        parse_segment_range(segments, 1)  # '1' or 'all' for a one-segment code
    track = _refine_mod.read_track(code)
    if track is None and isinstance(mode, int) and mode > 0:
        raise _refine_mod.RefinementError(f"--refine {mode}: this code has no refinement track")
    replay = track is not None and mode != "none" and sampler is None
    if replay:
        limit = track.count if mode == "all" else mode
        if limit > track.count:
            raise _refine_mod.RefinementError(
                f"--refine {limit}: the refinement track has {track.count} indexed steps")
        if steps is not None and steps != track.steps:
            raise _refine_mod.RefinementError(
                f"--steps {steps} differs from the refinement track's {track.steps} steps; "
                f"decode with --refine none to use another schedule")
    # 2. backbone
    if backbone is None:
        backbone = load_backbone(code.model)
    geom = Geometry(code.frames, code.height, code.width)
    backbone.check_geometry(geom)
    if steps is not None and not 1 <= steps <= 10000:
        raise LoraCodecError("--steps must be in 1..10000")
    steps = track.steps if replay else (steps or code.steps)
    text = code.caption if caption is None else caption
    t0 = time.perf_counter()
    # 3. adapter
    adapter = attach_code_adapter(backbone, code)
    try:
        velocity = _code_velocity(backbone, code, adapter, text)
        # 4. noise  5. sample
        noise = initial_noise(code.noise_seed, backbone.latent_shape(geom))
        if sampler is not None:
            latents = sampler(velocity, noise, code)
        elif replay:
            latents = _refine_mod.replay(velocity, noise, track, sigma_schedule(track.steps, track.shift),
                                         seed=code.noise_seed, limit=limit, progress=progress)
        else:
            latents = sample_ode(velocity, noise, sigma_schedule(steps, code.shift), progress=progress)
    finally:
        backbone.pipe.transformer = adapter.detach()
    require_finite(latents, "the sampled latents")
    # 6. VAE decode
    video = backbone.decode_latents(latents)
    require_finite(video, "the decoded frames")
    frames = tensor_to_video(video)
    report = describe(raw)
    report.update(decode_seconds=round(time.perf_counter() - t0, 3), decode_steps=steps, decode_caption=text,
                  decode_refine=(mode if replay else "none"), decode_refined_steps=(limit if replay else 0))
    return DecodeResult(frames=frames, fps=Fraction(code.fps_num, code.fps_den), code=code, report=report,
                        latents=latents.cpu())
