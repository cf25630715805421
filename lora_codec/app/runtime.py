"""The model serving this app process, loaded at import (ZeroGPU moves it to the GPU inside each GPU
call), its GPU-time cost model, the model lock, and the page's defaults for that backbone."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading

from .. import app_support as S
from ..backbones import load_backbone
from ..codec import EncodeSettings, decode
from ..errors import BackboneError

log = logging.getLogger("lora_codec.app")
for _noisy in ("diffusers", "transformers", "peft"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

# `spaces` (and the gradio it imports) before the model runs anything: ZeroGPU asks for it before torch
# touches CUDA, and importing gradio after torch has run an op aborts the interpreter at exit
# ("terminate called without an active exception", exit status 134), seen with torch 2.13 CPU.
S.import_spaces()

MODEL = os.environ.get("LORA_CODEC_MODEL", "auto")
LOAD_ERROR: str | None = None
try:
    BACKBONE = load_backbone(MODEL)
except BackboneError as _exc:
    if MODEL.lower() != "auto":
        raise
    LOAD_ERROR = str(_exc)
    log.warning("falling back to the small backbone: %s", LOAD_ERROR)
    BACKBONE = load_backbone("small")

TINY = BACKBONE.is_tiny
WAN = not (BACKBONE.is_tiny or BACKBONE.is_small)  # the real model (the CPU backbones code their native size)
CALL = "GPU call" if BACKBONE.device.type == "cuda" else "slice"  # what one fit slice is called on the page
ENCODE_FIELDS = {f.name for f in dataclasses.fields(EncodeSettings)}
HAS_REFINE = {"refine_n"} <= ENCODE_FIELDS
DECODE_HAS_REFINE = "refine" in inspect.signature(decode).parameters

# One model, one user at a time in this process. On ZeroGPU every GPU call runs in its own worker
# process, so the lock is only needed (and only taken) off ZeroGPU. Never taken inside a GPU function.
MODEL_LOCK = threading.Lock()
CONCURRENCY = int(os.environ.get("LORA_CODEC_APP_CONCURRENCY", "2" if S.ON_ZEROGPU else "1"))


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def model_lock():
    return _NoLock() if S.ON_ZEROGPU else MODEL_LOCK


COSTS = S.Costs()


def costs(wait: float = 0.0) -> S.CostModel | None:
    return COSTS.get(timeout=wait)


def _calibrate() -> None:
    try:
        with MODEL_LOCK:
            COSTS.set(S.calibrate(BACKBONE))
    except Exception as exc:  # never fatal: fall back to no estimate
        log.warning("calibration failed: %s", exc)
        COSTS.error = str(exc)
        COSTS.ready.set()


_native_tokens = S.video_tokens(BACKBONE, BACKBONE.native)
_native_pixels = BACKBONE.native.frames * BACKBONE.native.height * BACKBONE.native.width
if TINY or BACKBONE.device.type == "cpu":
    threading.Thread(target=_calibrate, name="lora_codec-calibrate", daemon=True).start()
else:
    COSTS.set(S.wan_costs(_native_tokens, _native_pixels))  # a GPU check's measurements, else the estimate

# the page's defaults for this backbone
FRAME_CHOICES = S.allowed_frame_counts(BACKBONE)
D = BACKBONE.defaults
APP_DEFAULTS = S.app_defaults(BACKBONE)
DEFAULT_FRAMES = APP_DEFAULTS.frames
DEFAULT_FIT_STEPS = APP_DEFAULTS.fit_steps
DEFAULT_BATCH = APP_DEFAULTS.batch
DEFAULT_TARGET_KB = 32.0 if WAN else (1.0 if TINY else 2.0)
SIZES = S.size_presets(BACKBONE)
REFINE_MAX_LOG2 = 10
