"""Support for the web app (`app.py`) that needs no UI: the ZeroGPU decorator, GPU-time estimates,
the per-session job folder (the clip as coded, the resumable fit state), limits and result tables.

Nothing here imports gradio, so it can be tested and reused (a batch script, another front end).

GPU time (METHOD.md section 7):
* Wan2.1-T2V-1.3B: an ESTIMATE from the published architecture - ~2.6 GFLOP per video token per
  forward for the linear layers plus 4 L^2 1536 per block for self-attention over L tokens (30
  blocks); a fit sample costs ~3.7 forwards; ~350 TFLOP/s sustained bf16 on a whole H100/H200.
  ZeroGPU hands out a slice of an H200 (the `spaces` package describes it as a MIG 3g.71gb with 60
  of the chip's 132 SMs), so on ZeroGPU the rate is scaled by 60/132. The VAE, the caption and moving
  weights are not in that arithmetic: a fixed per-call allowance (a guess) covers them. As soon as a
  real call has run, its measured times replace the estimate.
* tiny on a CPU: MEASURED on this machine by a short calibration at start-up (`calibrate`), and
  refined by every real fit and decode.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import LimitError, LoraCodecError, VideoError
from .units import kbit_per_second, shown_frames

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# ZeroGPU


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "t", "true", "yes")


ON_ZEROGPU = _env_flag("SPACES_ZERO_GPU")


def import_spaces():
    """The `spaces` package, or None off a ZeroGPU Space when it is not installed (or refuses to
    import). On a ZeroGPU Space (SPACES_ZERO_GPU set) a failed import is an error: without the
    decorator every GPU function would run without a GPU. Raises RuntimeError there."""
    try:
        import spaces  # noqa: F401  (app.py imports it before torch, as ZeroGPU asks)
    except Exception as exc:
        if ON_ZEROGPU:
            raise RuntimeError(
                f"this is a ZeroGPU Space (SPACES_ZERO_GPU is set) but the `spaces` package cannot be imported "
                f"({type(exc).__name__}: {exc}); add `spaces` to requirements.txt") from exc
        return None
    return spaces


def gpu(duration: Callable[..., float] | float):
    """`spaces.GPU(duration=...)` where the `spaces` package is installed (a no-op off ZeroGPU), an
    identity decorator where it is not (an error on a ZeroGPU Space: `import_spaces`). `duration` may
    be a callable of the decorated function's arguments returning seconds."""
    spaces = import_spaces()
    if spaces is None:
        return lambda fn: fn

    def dur(*args, **kwargs):
        value = duration(*args, **kwargs) if callable(duration) else duration
        return int(math.ceil(value))

    return spaces.GPU(duration=dur)


# ---------------------------------------------------------------------------------------------
# Limits of the web app (the CLI has none of these)


@dataclasses.dataclass(frozen=True)
class AppLimits:
    max_upload_mb: int = int(os.environ.get("LORA_CODEC_APP_MAX_UPLOAD_MB", "50"))
    max_clip_seconds: float = float(os.environ.get("LORA_CODEC_APP_MAX_CLIP_SECONDS", "600"))
    max_code_kb: int = int(os.environ.get("LORA_CODEC_APP_MAX_CODE_KB", "4096"))
    max_caption_bytes: int = 4096
    max_fit_steps: int = int(os.environ.get("LORA_CODEC_APP_MAX_FIT_STEPS", "5000"))
    max_sample_steps: int = 200
    # The longest GPU call asked for. ZeroGPU refuses a call longer than the visitor's allowance
    # ("illegal duration"), which is not documented (public reports: 120-450 s); 120 s is at the low
    # end, and a refused call is retried shorter (`iter_gpu_call`). Longer fits run as several calls.
    max_gpu_call_s: int = int(os.environ.get("LORA_CODEC_MAX_GPU_CALL_S", "120"))
    # the shortest call worth asking for; a visitor refused even that has used up the allowance
    min_gpu_call_s: int = int(os.environ.get("LORA_CODEC_MIN_GPU_CALL_S", "30"))
    # fitting time per slice off ZeroGPU (CPU or one's own GPU: no allowance, just progress saves)
    slice_s: float = float(os.environ.get("LORA_CODEC_APP_SLICE_S", "60"))

    def video_limits(self):
        from .video import Limits

        return Limits(max_bytes=self.max_upload_mb << 20, max_seconds=self.max_clip_seconds,
                      max_pixels=4096 * 2304, max_frames_read=4000)


LIMITS = AppLimits()


def check_upload(path: str | os.PathLike | None, what: str = "clip") -> Path:
    if not path:
        raise VideoError(f"no {what}: upload one or pick an example")
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"the uploaded {what} is missing on the server (upload it again)")
    size = p.stat().st_size
    if size > LIMITS.max_upload_mb << 20:
        raise LimitError(f"the {what} is {size / 1e6:.1f} MB; this app accepts up to {LIMITS.max_upload_mb} MB")
    return p


# ---------------------------------------------------------------------------------------------
# Geometry and cost


def video_tokens(backbone, geom) -> int:
    """Transformer tokens for a clip geometry: latent frames x patches (Wan: 16 px, 4 frames)."""
    _c, t, h, w = backbone.latent_shape(geom)
    pt, ph, pw = tuple(backbone.transformer.config.patch_size)
    return max(1, (t // pt) * (h // ph) * (w // pw))


# METHOD.md section 7 (published architecture of Wan2.1-T2V-1.3B)
WAN_LINEAR_FLOP_PER_TOKEN = 2.6e9
WAN_BLOCKS = 30
WAN_DIM = 1536
FIT_SAMPLE_FORWARDS = 3.7  # forward + recompute under checkpointing + backward to activations
SUSTAINED_FLOPS = float(os.environ.get("LORA_CODEC_GPU_TFLOPS", "350")) * 1e12
H200_SMS = 132
# Not in METHOD's arithmetic: VAE encode/decode, the caption, moving weights, ZeroGPU attach.
# A guess until a real call has been measured (then measured values are used).
WAN_CALL_ALLOWANCE_S = 30.0
WAN_CAPTION_ALLOWANCE_S = 5.0  # caption from the job's cache file, or one umt5-xxl forward
WAN_VAE_DECODE_ALLOWANCE_S = 15.0


def wan_forward_flops(tokens: int) -> float:
    return WAN_LINEAR_FLOP_PER_TOKEN * tokens + WAN_BLOCKS * 4.0 * tokens * tokens * WAN_DIM


def gpu_fraction(zerogpu: bool | None = None) -> float:
    """Share of a whole H100/H200 this process gets: ZeroGPU's slice, or 1 (`zerogpu` overrides
    whether this is a ZeroGPU Space)."""
    if ON_ZEROGPU if zerogpu is None else zerogpu:
        try:
            sms = int(os.environ.get("ZEROGPU_CUDA_MULTI_PROCESSOR_COUNT", "60"))
        except ValueError:
            sms = 60
        return max(0.05, min(1.0, sms / H200_SMS))
    return 1.0


@dataclasses.dataclass
class CostModel:
    """Seconds for the parts of a GPU call, at a reference geometry, scaled to others.

    Transformer work scales with `shape(tokens)` (Wan: its FLOP count; tiny: linear); VAE and setup
    with pixels. `source` says whether the numbers are estimates or measured here."""

    device: str
    source: str  # "estimate" or "measured"
    ref_tokens: int
    ref_pixels: int
    fit_sample_s: float  # one fit sample (one batch element)
    sample_step_s: float  # one sampling step (one forward)
    setup_s: float  # per call: session start (VAE encode, caption, adapter)
    decode_fixed_s: float  # per decode: adapter, caption, VAE decode
    flop_shaped: bool = False
    ready: bool = True
    note: str = ""

    def _t(self, tokens: int) -> float:
        if self.flop_shaped:
            return wan_forward_flops(tokens) / wan_forward_flops(self.ref_tokens)
        return tokens / self.ref_tokens

    def _p(self, pixels: int) -> float:
        return pixels / self.ref_pixels

    def fit_step(self, tokens: int, batch: int) -> float:
        return self.fit_sample_s * batch * self._t(tokens)

    def sample_step(self, tokens: int) -> float:
        return self.sample_step_s * self._t(tokens)

    def setup(self, pixels: int) -> float:
        return self.setup_s * max(0.25, self._p(pixels))

    def decode(self, tokens: int, pixels: int, steps: int) -> float:
        return self.decode_fixed_s * max(0.25, self._p(pixels)) + steps * self.sample_step(tokens)

    def observe(self, field: str, value: float, scale: float) -> None:
        """Blend a measurement (already divided by `scale` to the reference geometry) into `field`."""
        if not (value > 0 and math.isfinite(value) and scale > 0):
            return
        ref = value / scale
        old = getattr(self, field)
        new = ref if self.source != "measured" or old <= 0 else 0.5 * old + 0.5 * ref
        setattr(self, field, new)

    def mark_measured(self) -> None:
        self.source = "measured"


def wan_cost_model(ref_tokens: int, ref_pixels: int, *, zerogpu: bool | None = None) -> CostModel:
    """The published-architecture ESTIMATE of Wan's GPU times (METHOD.md section 7) at a reference
    geometry of `ref_tokens` tokens and `ref_pixels` pixels, on a whole GPU or a ZeroGPU slice."""
    zerogpu = ON_ZEROGPU if zerogpu is None else zerogpu
    rate = SUSTAINED_FLOPS * gpu_fraction(zerogpu)
    fwd = wan_forward_flops(ref_tokens) / rate
    where = "a ZeroGPU H200 slice (60/132 SMs)" if zerogpu else "one H100/H200-class GPU"
    return CostModel(
        device="cuda", source="estimate", ref_tokens=ref_tokens, ref_pixels=ref_pixels,
        fit_sample_s=FIT_SAMPLE_FORWARDS * fwd, sample_step_s=fwd, setup_s=WAN_CALL_ALLOWANCE_S,
        decode_fixed_s=WAN_VAE_DECODE_ALLOWANCE_S, flop_shaped=True,
        note=(f"estimate from the published architecture (METHOD.md section 7) at "
              f"{SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s sustained bf16 on {where}, plus a guessed "
              f"{WAN_CALL_ALLOWANCE_S:.0f} s per call for the VAE, the caption and moving weights"),
    )


GPU_RESULTS_PATH = Path(os.environ.get("LORA_CODEC_GPU_RESULTS") or
                        (Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_check.json"))


def wan_tokens(frames: int, height: int, width: int) -> int:
    """Wan2.1 transformer tokens of a clip: latent frames (4x temporal) x 16-px patches."""
    return ((int(frames) - 1) // 4 + 1) * (int(height) // 16) * (int(width) // 16)


class WanShape:
    """Wan2.1's latent shape and patch size without loading it (what `video_tokens` and
    `plan_encode` read from a backbone), for estimates where the model is not loaded."""

    transformer = type("T", (), {"config": type("C", (), {"patch_size": (1, 2, 2)})})

    @staticmethod
    def latent_shape(g) -> tuple[int, int, int, int]:
        return (16, (g.frames - 1) // 4 + 1, g.height // 8, g.width // 8)


# The Space's default fit budget on Wan, re-derived for the default recipe (docs/FIT.md, "The Space's budget").
# A fit sample costs the same whatever the recipe (one forward and backward: the cost model's `fit_sample_s`);
# what the recipe changes is how many samples reach a given quality. On `small`, complete fits of the default
# recipe matched the published recipe's final decoded PSNR (after its 10,000 samples) at 77 samples on the mean
# of 3 held-out clips x 2 seeds and at most PAPER_QUALITY_SAMPLES_SMALL on every one of them (the worst: the
# photograph pan, seed 1). The Space fits SPACE_FIT_MARGIN times that worst case - a margin for carrying the
# measurement from small to Wan - rounded up to 10, at batch 1 (one sample per step: the shortest GPU steps,
# so a fit call ends close to its deadline): 230 samples, where it was 300 with the published recipe's
# settings.
PAPER_QUALITY_SAMPLES_SMALL = 112
SPACE_FIT_MARGIN = 2
SPACE_FIT_BATCH = 1
SPACE_FIT_SAMPLES = 10 * math.ceil(PAPER_QUALITY_SAMPLES_SMALL * SPACE_FIT_MARGIN / 10)
SPACE_FIT_STEPS = SPACE_FIT_SAMPLES // SPACE_FIT_BATCH


def space_plans(max_call_s: float | None = None) -> list[tuple[tuple[int, int], Plan]]:
    """What a visitor's default compress costs on the ZeroGPU Space at each Wan size preset, by the
    published-architecture ESTIMATE for a ZeroGPU slice (the README's Space section quotes it):
    (size, Plan) per preset; `Plan.calls` counts the fit calls and the finish call."""
    from .backbones import Geometry

    d = AppDefaults(frames=33, fit_steps=SPACE_FIT_STEPS, batch=SPACE_FIT_BATCH, rate_lambda=BALANCED_LAMBDA,
                    sample_steps=50)
    costs = wan_cost_model(wan_tokens(33, 480, 832), 33 * 480 * 832, zerogpu=True)
    cap = LIMITS.max_gpu_call_s if max_call_s is None else max_call_s
    return [((w, h), plan_encode(costs, WanShape, Geometry(d.frames, h, w), fit_steps=d.fit_steps, batch=d.batch,
                                 sample_steps=d.sample_steps, max_call_s=cap))
            for w, h in SIZE_PRESETS["wan2.1-t2v-1.3b"]]


def load_gpu_results(path: str | os.PathLike | None = None) -> dict | None:
    """The JSON `scripts/gpu_check.py` printed (the measured Wan numbers on a GPU), or None when there
    is none (or it holds no fit measurement, e.g. a CPU dry run)."""
    p = Path(path) if path else GPU_RESULTS_PATH
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("device_type") != "cuda" or not data.get("fit"):
        return None
    return data


def wan_cost_model_measured(results: dict) -> CostModel:
    """The Wan cost model from a GPU check (`load_gpu_results`): the batch-1 fit sample and the
    sampling step measured at the check's reference geometry, the VAE times and the adapter set-up;
    scaled by the SM count when this process gets a ZeroGPU slice of another GPU. The caption is not
    measured there (a random text encoder is not loaded): a fixed allowance covers it."""
    ref = results["fit"][0]
    g = ref["geometry"]  # [frames, height, width]
    tokens = wan_tokens(*g)
    pixels = g[0] * g[1] * g[2]
    sms = results.get("sm_count") or H200_SMS
    here = gpu_fraction() * H200_SMS if ON_ZEROGPU else sms
    slow = max(1.0, sms / max(1.0, here))
    per_sample = float(ref["seconds_per_sample"]) * slow
    dec = results.get("decode") or {}
    step = float(dec.get("seconds_per_step") or per_sample / FIT_SAMPLE_FORWARDS) * slow
    setup = (float(results.get("vae_encode_s") or 0.0) + float(results.get("adapter_setup_s") or 0.0)) * slow
    return CostModel(
        device="cuda", source="measured", ref_tokens=tokens, ref_pixels=pixels, fit_sample_s=per_sample,
        sample_step_s=step, setup_s=setup + WAN_CAPTION_ALLOWANCE_S,
        decode_fixed_s=float(dec.get("vae_decode_s") or WAN_VAE_DECODE_ALLOWANCE_S) * slow, flop_shaped=True,
        note=(f"measured by scripts/gpu_check.py on {results.get('device_name', 'a GPU')} with random full-size "
              f"weights ({results.get('date_utc', '')})" + (f", scaled to a ZeroGPU slice ({here:.0f} of {sms} SMs)"
                                                           if slow > 1 else "")
              + f", plus a guessed {WAN_CAPTION_ALLOWANCE_S:.0f} s per call for the caption"),
    )


def wan_costs(ref_tokens: int, ref_pixels: int, results_path: str | os.PathLike | None = None) -> CostModel:
    """The Wan cost model the app starts from: measured by a GPU check when its JSON exists
    (`GPU_RESULTS_PATH`), else the published-architecture estimate (`wan_cost_model`)."""
    results = load_gpu_results(results_path)
    if results is not None:
        try:
            return wan_cost_model_measured(results)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            log.warning("ignoring the GPU check results (%s): %s", GPU_RESULTS_PATH, exc)
    return wan_cost_model(ref_tokens, ref_pixels)


class Costs:
    """The app's live cost model: an estimate or a calibration, refined by every real call."""

    def __init__(self):
        self.model: CostModel | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self._lock = threading.Lock()

    def set(self, model: CostModel) -> None:
        with self._lock:
            self.model = model
        self.ready.set()

    def get(self, timeout: float | None = 0.0) -> CostModel | None:
        if timeout:
            self.ready.wait(timeout)
        return self.model

    def observe_fit(self, backbone, geom, batch: int, step_s: float, setup_s: float | None = None) -> None:
        m = self.model
        if m is None:
            return
        tokens, pixels = video_tokens(backbone, geom), geom.frames * geom.height * geom.width
        with self._lock:
            m.observe("fit_sample_s", step_s, batch * m._t(tokens))
            if setup_s is not None:
                m.observe("setup_s", setup_s, max(0.25, m._p(pixels)))
            m.mark_measured()

    def observe_decode(self, backbone, geom, step_s: float | None, fixed_s: float | None) -> None:
        m = self.model
        if m is None:
            return
        tokens, pixels = video_tokens(backbone, geom), geom.frames * geom.height * geom.width
        with self._lock:
            if step_s is not None:
                m.observe("sample_step_s", step_s, m._t(tokens))
            if fixed_s is not None:
                m.observe("decode_fixed_s", fixed_s, max(0.25, m._p(pixels)))
            m.mark_measured()


def synthetic_frames(frames: int, height: int, width: int) -> np.ndarray:
    """A smooth moving colour pattern (uint8 RGB), for the calibration."""
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, height, dtype=np.float32)[None, :, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, None, :]
    chans = [np.sin(3 * x + 0.3 * t + 0 * y), np.cos(2 * y - 0.2 * t + 0 * x), np.sin(4 * x * y + 0.1 * t)]
    return np.clip((np.stack(chans, -1) * 0.45 + 0.5) * 255, 0, 255).astype(np.uint8)


class StepTimer:
    """Records the time of each progress callback of a decode: per-step and fixed time."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.marks: list[float] = []

    def __call__(self, i: int, n: int) -> None:
        self.marks.append(time.perf_counter())

    def split(self, total_s: float) -> tuple[float | None, float | None]:
        if len(self.marks) >= 2:
            step = (self.marks[-1] - self.marks[0]) / (len(self.marks) - 1)
        elif len(self.marks) == 1:
            step = None
        else:
            return None, None
        if step is None:
            return None, None
        return step, max(0.0, total_s - step * len(self.marks))


def calibrate(backbone) -> CostModel:
    """Measure this machine with the loaded (tiny) backbone at its native geometry: one session
    start, three fit steps (the first is a warm-up), one 3-step decode. About 10 s on 2 CPU cores."""
    from .codec import EncodeSession, EncodeSettings, decode
    from .video import Clip

    g = backbone.native
    frames = synthetic_frames(g.frames, g.height, g.width)
    clip = Clip(frames=frames, fps=Fraction(16), src_width=g.width, src_height=g.height, src_frames=g.frames)
    settings = EncodeSettings(model=backbone.name, caption="calibration", seed=0, fit_steps=3, sample_steps=3)
    t0 = time.perf_counter()
    session = EncodeSession.start(clip, settings, backbone=backbone)
    try:
        setup = time.perf_counter() - t0
        session.fit(max_steps=1)
        t1 = time.perf_counter()
        session.fit(max_steps=2)
        step = (time.perf_counter() - t1) / 2
        batch = session.fit_config.batch
        data = session.finish().data
    finally:
        session.close()
    timer = StepTimer()
    t2 = time.perf_counter()
    decode(data, backbone=backbone, steps=3, progress=timer)
    sample_step, fixed = timer.split(time.perf_counter() - t2)
    geom = session.geometry
    return CostModel(
        device=backbone.device.type, source="measured", ref_tokens=video_tokens(backbone, geom),
        ref_pixels=geom.frames * geom.height * geom.width, fit_sample_s=step / batch,
        sample_step_s=sample_step or 0.05, setup_s=setup, decode_fixed_s=fixed or 1.0,
        note=f"measured on this machine ({os.cpu_count()} CPU cores) at start-up and by every run",
    )


@dataclasses.dataclass
class Plan:
    """What a compress request will cost, before it starts."""

    fit_s: float
    finish_s: float
    decode_s: float
    setup_s: float
    calls: int
    total_s: float
    per_step_s: float
    tokens: int
    geometry: tuple[int, int, int]


def plan_encode(costs: CostModel, backbone, geom, *, fit_steps: int, batch: int, sample_steps: int,
                finetune_steps: int = 0, refine_steps: int = 0, slice_s: float | None = None,
                max_call_s: float | None = None) -> Plan:
    """What an encode costs by the cost model: fit calls of `slice_s` fitting seconds each (default:
    what a ZeroGPU call of `max_call_s` leaves after set-up and the save margin; off ZeroGPU the
    configured slice), plus one call to finish (quantise, refinement track, decode). `calls` counts
    both."""
    tokens = video_tokens(backbone, geom)
    pixels = geom.frames * geom.height * geom.width
    per_step = costs.fit_step(tokens, batch)
    fit = fit_steps * per_step
    setup = costs.setup(pixels)
    if slice_s is None:
        if ON_ZEROGPU or max_call_s is not None:
            slice_s = fit_slice_s(LIMITS.max_gpu_call_s if max_call_s is None else max_call_s, setup, per_step)
        else:
            slice_s = LIMITS.slice_s
    calls = max(1, math.ceil(fit / max(1.0, slice_s)))
    finish = finetune_steps * per_step + refine_steps * costs.sample_step(tokens)
    dec = costs.decode(tokens, pixels, sample_steps)
    total = calls * setup + fit + setup + finish + dec
    return Plan(fit_s=fit, finish_s=finish, decode_s=dec, setup_s=setup, calls=calls + 1, total_s=total,
                per_step_s=per_step, tokens=tokens, geometry=(geom.frames, geom.height, geom.width))


def call_duration(estimate_s: float, max_call_s: float | None = None) -> float:
    """Seconds to ask ZeroGPU for, for a call estimated at `estimate_s`: a margin, within limits."""
    cap = LIMITS.max_gpu_call_s if max_call_s is None else max_call_s
    return float(min(cap, max(20.0, 1.3 * estimate_s + 10.0)))


# A fit call ends this many seconds before its requested duration, to save the fit state (a few MB of
# safetensors) before ZeroGPU ends the call.
SAVE_MARGIN_S = 10.0


def fit_slice_s(call_s: float, setup_s: float, step_s: float = 0.0) -> float:
    """Seconds of fitting that fit in a GPU call of `call_s` seconds whose set-up (session start:
    VAE encode, caption, adapter) takes `setup_s`: what is left after the set-up, one step (a step
    in progress is finished) and the save margin. At least 1 s (the call then makes one step)."""
    return max(1.0, float(call_s) - float(setup_s) - float(step_s) - SAVE_MARGIN_S)


def fit_deadline_reached(elapsed_s: float, call_s: float, step_s: float) -> bool:
    """Inside a fit call: True when another step would risk running past the call's duration.
    `elapsed_s` counts from the call's start (the GPU function's first line) and `call_s` is the
    duration the call asked for, passed in its own arguments: a ZeroGPU worker is a forked, reused
    process, so module state there (cost model, limits) may be stale."""
    return elapsed_s + 2.0 * step_s + SAVE_MARGIN_S > call_s


def plan_call_seconds(costs: "CostModel | None", backbone, geom, batch: int, max_call_s: float) -> tuple[float, float]:
    """(call_s, fit_s) for the next fit call: a call of at most `max_call_s` (ZeroGPU) or the
    configured slice (elsewhere), and the fitting seconds inside it."""
    pixels = geom.frames * geom.height * geom.width
    setup = costs.setup(pixels) if costs else 30.0
    step = costs.fit_step(video_tokens(backbone, geom), batch) if costs else 0.0
    if not ON_ZEROGPU:
        fit_s = LIMITS.slice_s
        return call_duration(setup + fit_s, max(float(max_call_s), setup + fit_s + SAVE_MARGIN_S)), fit_s
    call_s = float(max_call_s)
    return call_s, fit_slice_s(call_s, setup, step)


# ---------------------------------------------------------------------------------------------
# ZeroGPU refusals. The `spaces` package schedules a GPU call when it starts (spaces/zero/client.py,
# `schedule`) and, when ZeroGPU says no, raises a gradio error (`spaces.zero.gradio.error`: a
# `gr.Error` whose `title` names the reason): "ZeroGPU illegal duration" when the requested duration
# is above the visitor's allowance ("The requested GPU duration (Ns) is larger than the maximum
# allowed"), "ZeroGPU quota exceeded" when the visitor's (or the Space's) GPU time is used up.

ZEROGPU_ILLEGAL_DURATION = "ZeroGPU illegal duration"
ZEROGPU_QUOTA_TITLES = ("ZeroGPU quota exceeded", "ZeroGPU pending credits exceeded")


def _error_title(exc: BaseException) -> str:
    return str(getattr(exc, "title", "") or "")


def _error_message(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())


def is_duration_refusal(exc: BaseException) -> bool:
    """ZeroGPU refused a call for asking more seconds than the visitor's allowance."""
    return _error_title(exc) == ZEROGPU_ILLEGAL_DURATION or "larger than the maximum allowed" in _error_message(exc)


def is_quota_refusal(exc: BaseException) -> bool:
    """ZeroGPU refused a call because the visitor's (or the Space's) GPU time is used up."""
    return _error_title(exc) in ZEROGPU_QUOTA_TITLES


class GpuAllowanceError(LimitError):
    """The visitor's ZeroGPU allowance does not cover another call (used up, or shorter than the
    shortest useful call)."""


def allowance_used_up(exc: BaseException | None = None, *, saved: bool = True) -> GpuAllowanceError:
    """The message a visitor sees when ZeroGPU gives no more GPU time."""
    said = f" (ZeroGPU says: {_error_message(exc)})" if exc is not None and _error_message(exc) else ""
    keep = (" Your fit so far is saved: press *Keep improving* when your allowance has come back, or run the "
            "fit on your own GPU with `python -m lora_codec encode`." if saved else
            " Try again later, or run the codec on your own GPU with `python -m lora_codec`.")
    return GpuAllowanceError(f"Your GPU allowance on this Space is used up for now{said}.{keep}")


def shorter_call_s(call_s: float, factor: float = 0.6) -> float | None:
    """The next, shorter call length to try after a duration refusal, or None below the shortest
    useful call (`LIMITS.min_gpu_call_s`)."""
    nxt = math.floor(float(call_s) * factor)
    return float(nxt) if nxt >= LIMITS.min_gpu_call_s else None


def iter_gpu_call(make_call: Callable[[float], Any], call_s: float, *, on_shorter: Callable[[float], None] | None = None):
    """Run the GPU generator `make_call(call_s)` and yield its items. When ZeroGPU refuses the call
    for its duration (before it has yielded anything), call `on_shorter(new_call_s)` and try again
    with a shorter call (`shorter_call_s`); when no shorter call is useful, or ZeroGPU says the quota
    is used up, raise `GpuAllowanceError` (a plain-words message). Other errors pass through."""
    while True:
        started = False
        try:
            for item in make_call(call_s):
                started = True
                yield item
            return
        except Exception as exc:
            if started:
                raise
            if is_quota_refusal(exc):
                raise allowance_used_up(exc) from None
            if not is_duration_refusal(exc):
                raise
            nxt = shorter_call_s(call_s)
            log.warning("ZeroGPU refused a %.0f s call (%s); %s", call_s, _error_message(exc),
                        f"retrying with {nxt:.0f} s" if nxt else "giving up")
            if nxt is None:
                raise allowance_used_up(exc) from None
            call_s = nxt
            if on_shorter is not None:
                on_shorter(call_s)


def gpu_call(make_call: Callable[[float], Any], call_s: float, *, need_s: float = 0.0,
             on_shorter: Callable[[float], None] | None = None, saved: bool = True):
    """`iter_gpu_call` for a GPU function that returns a value (not a generator) and cannot be split:
    a refused call is retried shorter only while the shorter call still covers `need_s` seconds."""
    while True:
        try:
            return make_call(call_s)
        except Exception as exc:
            if is_quota_refusal(exc):
                raise allowance_used_up(exc, saved=saved) from None
            if not is_duration_refusal(exc):
                raise
            nxt = shorter_call_s(call_s)
            if nxt is None:
                raise allowance_used_up(exc, saved=saved) from None
            if nxt < need_s:
                raise GpuAllowanceError(
                    f"this step needs about {fmt_seconds(need_s)} of GPU time in one call, more than ZeroGPU allows "
                    f"you per call ({_error_message(exc)}); choose a smaller size or fewer frames or sampling steps, "
                    "or run it on your own GPU with `python -m lora_codec`") from None
            call_s = nxt
            if on_shorter is not None:
                on_shorter(call_s)


def fmt_seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# Jobs: one compress request's files (the clip as coded, the fit state, the code)

APP_TMP = Path(os.environ.get("LORA_CODEC_APP_TMP") or (Path(tempfile.gettempdir()) / "lora_codec_app"))
JOB_MAX_AGE_S = float(os.environ.get("LORA_CODEC_APP_JOB_MAX_AGE_S", str(6 * 3600)))


def new_workdir(prefix: str = "job") -> Path:
    APP_TMP.mkdir(parents=True, exist_ok=True)
    sweep()
    d = APP_TMP / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


def remove_workdir(path: str | os.PathLike | None) -> None:
    """Delete a job folder (only folders inside APP_TMP)."""
    if not path:
        return
    p = Path(path).resolve()
    try:
        root = APP_TMP.resolve()
    except OSError:
        return
    if p.parent == root and p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def sweep(max_age_s: float = JOB_MAX_AGE_S) -> int:
    """Remove job folders older than `max_age_s` (sessions that ended without cleaning up)."""
    if not APP_TMP.is_dir():
        return 0
    now = time.time()
    n = 0
    for d in APP_TMP.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except OSError:
            pass
    return n


# ---------------------------------------------------------------------------------------------
# Jobs kept across a page reload: a per-browser job id (kept in the browser) names a job folder here
# holding the clip, the settings, the fit state and the last result (job.json). Same expiry as every
# job folder: `sweep` removes it JOB_MAX_AGE_S after its last use.

JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
JOB_FILE = "job.json"


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id) -> str:
    """A job id from a client: exactly 32 lower-case hex digits (LimitError otherwise). Never used
    in a path before this check."""
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise LimitError("not a valid job id (expected 32 hexadecimal digits, as this app makes them)")
    return job_id


def job_dir(job_id: str) -> Path:
    return APP_TMP / f"job-{check_job_id(job_id)}"


def fresh_job_dir(job_id: str) -> Path:
    """An empty folder for job `job_id` (a previous job of that id is deleted)."""
    d = job_dir(job_id)
    remove_workdir(d)
    APP_TMP.mkdir(parents=True, exist_ok=True)
    sweep()
    d.mkdir()
    return d


def save_job(job: dict) -> None:
    """Write a keyed job's record to its folder (atomically) and mark the folder as used now."""
    jid = job.get("job_id")
    if not jid:
        return
    d = job_dir(jid)
    if not d.is_dir():
        return
    tmp = d / (JOB_FILE + ".tmp")
    tmp.write_text(json.dumps(job, default=str))
    os.replace(tmp, d / JOB_FILE)
    os.utime(d)


def load_job(job_id: str) -> dict | None:
    """The saved job of `job_id`, or None when it is unknown or has expired (its folder swept).
    Paths are rebuilt from the folder, not taken from the record."""
    d = job_dir(job_id)
    f = d / JOB_FILE
    if not f.is_file() or time.time() - d.stat().st_mtime > JOB_MAX_AGE_S:
        return None
    try:
        job = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(job, dict) or job.get("job_id") != job_id:
        return None
    job.update(dir=str(d), state=str(d / "fit_state.safetensors"), clip=str(d / "clip.npz"),
               original=str(d / "original.mp4"))
    os.utime(d)
    return job


@dataclasses.dataclass
class ClipInfo:
    """What a quick look at an uploaded clip says (no full decode)."""

    width: int
    height: int
    fps: float
    seconds: float | None
    frames: int | None


def probe(path: str | os.PathLike) -> ClipInfo:
    """Displayed size (sample aspect ratio and rotation applied, as `encode` codes it), rate, duration
    and frame count, from `video.probe_video` (one frame decoded; VideoError when unreadable)."""
    from .video import probe_video

    info = probe_video(path, LIMITS.video_limits())
    return ClipInfo(width=info.width, height=info.height, fps=float(info.fps), seconds=info.seconds,
                    frames=info.frames)


# Sizes the app offers, (width, height) landscape; a portrait clip gets the transpose. Wan2.1-1.3B was
# trained at 480p (832x480): smaller sizes cost quality but much less GPU time.
SIZE_PRESETS = {"wan2.1-t2v-1.3b": [(480, 272), (624, 352), (832, 480)]}
# The Space's default size: the largest preset whose default fit needs at most this many fit calls.
DEFAULT_FIT_CALLS = int(os.environ.get("LORA_CODEC_APP_DEFAULT_FIT_CALLS", "2"))


def size_presets(backbone) -> list[tuple[int, int]]:
    """The sizes the app offers for a backbone (its native size when it has no presets), small first."""
    native = (backbone.native.width, backbone.native.height)
    if not getattr(backbone, "free_size", False):
        return [native]
    sizes = SIZE_PRESETS.get(backbone.name, [native])
    return [s for s in sizes if s[0] * s[1] <= backbone.pixel_cap] or [native]


def oriented(size: tuple[int, int], src_height: int, src_width: int) -> tuple[int, int]:
    """A landscape (width, height) preset turned to the source's orientation (transposed for portrait)."""
    w, h = int(size[0]), int(size[1])
    if src_height > src_width and w > h:
        return h, w
    return w, h


def default_size(costs: CostModel | None, backbone, sizes, *, frames: int, fit_steps: int, batch: int,
                 sample_steps: int, max_fit_calls: int = DEFAULT_FIT_CALLS, max_call_s: float | None = None):
    """The largest of `sizes` whose fit of `fit_steps` steps at `frames` frames needs at most
    `max_fit_calls` GPU calls of `max_call_s` seconds by the cost model (the smallest when none does;
    the first without a cost model). Returns ((width, height), Plan or None)."""
    if costs is None:
        return sizes[0], None
    best = None
    for w, h in sorted(sizes, key=lambda s: s[0] * s[1]):
        from .backbones import Geometry

        g = Geometry(frames, h, w)
        p = plan_encode(costs, backbone, g, fit_steps=fit_steps, batch=batch, sample_steps=sample_steps,
                        max_call_s=max_call_s)
        if best is None or p.calls - 1 <= max_fit_calls:
            best = ((w, h), p)
    return best


@dataclasses.dataclass(frozen=True)
class AppDefaults:
    """What a visitor's compress uses unless changed: frames, fit budget (steps), batch, rate weight
    (the 'balanced' preset) and sampling steps stored in the code."""

    frames: int
    fit_steps: int
    batch: int
    rate_lambda: float
    sample_steps: int


BALANCED_LAMBDA = 5e-3


def app_defaults(backbone) -> AppDefaults:
    """The app's defaults for a backbone: the whole native length with the backbone's batch on the CPU
    ones (tiny: a short plumbing fit; small: its default fit, about a minute on 2 cores); 33 frames at
    batch 1 on a real model, whose fits run in GPU calls."""
    d = backbone.defaults
    if backbone.is_tiny or backbone.is_small:
        steps = 60 if backbone.is_tiny else d.stage1_steps + d.stage2_steps
        return AppDefaults(frames=backbone.native.frames, fit_steps=steps, batch=d.batch,
                           rate_lambda=BALANCED_LAMBDA if backbone.is_tiny else d.rate_lambda,
                           sample_steps=d.sample_steps)
    return AppDefaults(frames=min(33, backbone.native.frames), fit_steps=SPACE_FIT_STEPS, batch=SPACE_FIT_BATCH,
                       rate_lambda=BALANCED_LAMBDA,
                       sample_steps=d.sample_steps)


def allowed_frame_counts(backbone) -> list[int]:
    n = backbone.native.frames
    step = backbone.scale_temporal
    return [f for f in range(1 + step, n + 1, step)] or [n]


def prepare_clip(path, workdir: Path, backbone, *, start_seconds: float, max_frames: int,
                 size: tuple[int, int] | None = None, segments: int = 1) -> dict:
    """Read the clip (app limits), keep at most `max_frames` frames (4k+1, at most the native length)
    from `start_seconds`, resize + crop it to the coded geometry (`size`: a landscape (width, height)
    preset, turned to the clip's orientation; None = native) and store it in the job folder, so that
    every GPU call of the fit sees exactly the same frames. Returns the clip's record, whose `size`
    is the coded (width, height) the encode settings must carry.

    `segments` > 1 (a long clip): code that many consecutive segments of the native length (sharing
    one frame, lora_codec/segments.py) from `start_seconds` - every frame read is kept and the record
    says `segments`, `total_frames` and the segments' `starts`. A still picture (PNG, JPEG, WebP) is one
    frame (`still` true; also stored as `original.png`)."""
    from .segments import plan_starts
    from .stills import is_still_image, read_input
    from .video import fit_to_geometry, write_video

    p = check_upload(path)
    try:
        start_seconds = float(start_seconds or 0.0)
    except (TypeError, ValueError):
        raise LimitError("the start time must be a number of seconds") from None
    if start_seconds < 0 or not math.isfinite(start_seconds):
        raise LimitError("the start time must be >= 0")
    native = backbone.native.frames
    segments = max(1, int(segments or 1))
    max_frames = int(max_frames or native)
    max_frames = max(1, min(native, max_frames))
    if segments > 1:  # k segments sharing one frame each: k (F - 1) + 1 frames
        max_frames = segments * (native - 1) + 1
    clip = read_input(p, start_seconds=start_seconds, max_frames=max_frames, limits=LIMITS.video_limits())
    still = is_still_image(p)
    notes = list(clip.notes)
    t, h, w = clip.frames.shape[:3]
    geom = backbone.coded_geometry(t, h, w, size=oriented(size, h, w) if size else None)
    starts = plan_starts(t, geom.frames, 1) if t > native else (0,)
    total = t if len(starts) > 1 else geom.frames
    frames = fit_to_geometry(clip.frames, total, geom.height, geom.width)
    if len(starts) > 1:
        notes.append(f"a long clip: {t} frames coded as {len(starts)} segments of {geom.frames} frames (a fit each, "
                     "one after the other), blended where they meet")
    elif geom.frames < clip.frames.shape[0]:
        notes.append(f"kept {geom.frames} of the {clip.frames.shape[0]} frames read (the model codes 4k+1 frames)")
    info = None
    if not still:
        try:
            info = probe(p)
        except LoraCodecError:
            pass
    if info and info.seconds:
        coded_s = total / float(clip.fps)
        if start_seconds + coded_s < info.seconds - 0.5 / float(clip.fps):
            per = native - 1
            left = max(1, int((info.seconds - start_seconds) * float(clip.fps)))
            need = max(1, -(-(left - 1) // per))
            notes.append(
                f"the clip is {info.seconds:.2f} s long; this codes {coded_s:.2f} s from {start_seconds:g} s "
                f"({total} frames; the model's native length is {native} frames) - pick another start time to code "
                f"another part, or more segments (all of it from {start_seconds:g} s: {need} segments)")
    fps = Fraction(clip.fps).limit_denominator(1 << 20)
    clip_path = workdir / "clip.npz"
    np.savez(clip_path, frames=frames)
    original = workdir / "original.mp4"
    write_video(original, frames, fps, crf=12)
    record = {
        "clip": str(clip_path),
        "original": str(original),
        "fps": [fps.numerator, fps.denominator],
        "src": [clip.src_width, clip.src_height, clip.src_frames],
        "geometry": [geom.frames, geom.height, geom.width],
        "size": [geom.width, geom.height],
        "notes": notes,
        "start_seconds": start_seconds,
        "segments": len(starts),
        "starts": list(starts),
        "total_frames": int(frames.shape[0]),
        "still": bool(still),
    }
    if still:
        record["original_image"] = str(workdir / "original.png")
        write_video(record["original_image"], frames[:1], fps)
    (workdir / "clip.json").write_text(json.dumps(record))
    return record


def state_step(path) -> int:
    """The fit steps a saved fit state holds (reads only its metadata): a one-segment fit's step, or
    for a long clip the finished segments' steps plus the running segment's."""
    import json as _json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("lora_codec_segments")
    except Exception:
        raw = None
    if raw is not None:
        meta = _json.loads(raw)
        done = sum(int(r.get("steps", 0)) for r in (meta.get("reports") or {}).values())
        return done + int((meta.get("current_meta") or {}).get("step", 0))
    from .fit import Fitter

    _tensors, meta = Fitter.read_state(path)
    return int(meta.get("step", 0))


def load_clip(record: dict):
    """The stored clip as a `video.Clip` at the coded geometry (source size kept for the code)."""
    from .video import Clip

    with np.load(record["clip"]) as z:
        frames = np.ascontiguousarray(z["frames"])
    w, h, n = record["src"]
    return Clip(frames=frames, fps=Fraction(*record["fps"]), src_width=int(w), src_height=int(h), src_frames=int(n),
                notes=[])


# ---------------------------------------------------------------------------------------------
# Tables

BYTE_PARTS = (
    ("header", "header_bytes", "magic, version, clip geometry, model id, sampler settings, step size, CRC"),
    ("caption", "caption_bytes", "the caption, compressed"),
    ("prior", "prior_bytes", "the discrete prior of the symbols"),
    ("payload", "payload_bytes", "the entropy-coded adapter vector (theta)"),
    ("refinement track", "refine_bytes", "the inference-time refinement choices (optional; section 1)"),
)

BYTE_HEADERS = ["part", "bytes", "share", "kbit/s", "bits per pixel", "what it is"]


def byte_table(report: dict) -> tuple[list[list[Any]], int]:
    """Rows of where the bytes went (with kbit/s and bits per pixel at the coded geometry), ending in
    a total row, and the sum of the parts (equal to the file size for a well-formed code)."""
    total = int(report["total_bytes"])
    seconds = float(report["seconds"])
    pixels = int(report["frames"]) * int(report["height"]) * int(report["width"])
    rows = []
    parts_sum = 0
    parts = [(label, int(report.get(key, 0) or 0), what) for label, key, what in BYTE_PARTS]
    if "refine_bytes" not in report:  # an older report: every section is counted as the track
        parts[-1] = (parts[-1][0], int(report.get("sections_bytes", 0) or 0), parts[-1][2])
    other = int(report.get("sections_bytes", 0) or 0) - parts[-1][1]
    if other:
        parts.append(("other sections", other, "sections this app does not know"))
    for label, n, what in parts:
        parts_sum += n
        rows.append([label, n, f"{100.0 * n / max(1, total):.1f} %", round(kbit_per_second(n, seconds), 4),
                     round(n * 8 / pixels, 6), what])
    rows.append(["total (the code file)", total, "100 %", round(kbit_per_second(total, seconds), 4),
                 round(total * 8 / pixels, 6),
                 shown_frames(report['frames'], report['width'], report['height'])
                 + ("" if report["frames"] == 1 else f", {seconds:.2f} s")])
    return rows, parts_sum


METRIC_HEADERS = ["method", "bytes", "PSNR (dB, RGB)", "MS-SSIM", "note"]


def _num(x, nd):
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return "inf"
    return round(float(x), nd)


def metric_row(name: str, nbytes: int, m: dict, note: str = "") -> list[Any]:
    return [name, int(nbytes), _num(m.get("psnr_rgb"), 2), _num(m.get("ms_ssim"), 4), note]


def describe_backbone(backbone, load_error: str | None = None) -> str:
    """Markdown: which backbone is serving, and what that means."""
    if backbone.is_tiny:
        why = f" (the real model could not be loaded: {load_error})" if load_error else ""
        return (
            f"**Serving the `tiny` backbone on the {backbone.device.type.upper()}{why}.** It has random seeded "
            "weights and **no visual knowledge**: its reconstructions are noise-like, so this instance shows the "
            "plumbing (fitting, the code, the byte accounting, decoding, the comparison), not the quality. "
            "The real codec needs the **Wan2.1-T2V-1.3B model** (its umt5-xxl text encoder alone is about 11 GB in bf16, per the published configuration) on "
            "a CUDA GPU - an H100/H200-class card or a ZeroGPU Space. Codes made here decode only with `tiny`.")
    if backbone.is_small:
        why = f" (the real model could not be loaded: {load_error})" if load_error else ""
        return (
            f"**Serving the `small` backbone on the {backbone.device.type.upper()}{why}.** It is a 7 MB model with "
            "Wan's architecture, trained on two CPU cores on a few seconds of *Big Buck Bunny* and four photographs, "
            "so a clip is coded at 9 frames of 128x80 and comes back very soft - recognisable for pictures like the "
            "example, blurred patches of colour for others: far below the real "
            "codec, which needs the **Wan2.1-T2V-1.3B model** (its text encoder alone is about 11 GB in bf16) on a "
            "CUDA GPU. Codes made here decode only with `small`.")
    where = "a ZeroGPU H200 slice" if ON_ZEROGPU else f"{backbone.device.type.upper()}"
    return (f"**Serving Wan2.1-T2V-1.3B on {where}.** Codes made here decode with the same weights anywhere "
            "(`python -m lora_codec decode`).")


def space_cost_markdown() -> str:
    """The README's table of what a visitor's default compress costs on the ZeroGPU Space per size
    preset (`space_plans`: an ESTIMATE until scripts/gpu_check.py has measured a GPU).
    tests/test_issue11.py checks that the README holds exactly this text."""
    rows = ["| size | GPU calls (fit + finish) | GPU time | per fit step |", "|---|---|---|---|"]
    for (w, h), p in space_plans():
        rows.append(f"| {w}x{h} | {p.calls} ({p.calls - 1} + 1) | ~{fmt_seconds(p.total_s)} | "
                    f"~{p.per_step_s:.2f} s |")
    return "\n".join(rows)
