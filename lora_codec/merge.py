"""Merged codes (editing): decode with several codes' adapters applied at once.

METHOD.md section 4: two codes merge by concatenating their LoRAs along the rank dimension,
`dW = B1 A1 + B2 A2`. With a weight per code this is `dW = w1 B1 A1 + w2 B2 A2`. peft has no
`add_weighted_adapter` for UniLoRA (only LoRA's, whose `combination_type="cat"` is the same thing:
rank concatenation equals every adapter active at once). So every code gets its own UniLoRA adapter
on the one transformer, all of them active (each layer adds `B_k (A_k x)`), and a code's weight
multiplies its per-entry A scales (`unilora_scales_A`), so the layer adds `w_k B_k A_k x` exactly; a
weight may be negative or above 1. A code merged with itself at 0.5 and 0.5 therefore adds the same
update as the code alone (up to float rounding).

Merging is refused, with a message saying what differs, when the codes were made with other
backbones (name or weights) or have other geometries (frames, size: the noise and latents must
match) or adapter structures (targets, rank, theta length, index seed), or other segment tables.
The first code gives everything else: caption, noise seed, sampling steps, shift, guidance.
"""

from __future__ import annotations

import math
import warnings

import torch

from .adapter import ADAPTER_NAME, MAX_RANK, MAX_THETA_LENGTH, AdapterConfig, dequantise
from .errors import BackboneError, LimitError, LoraCodecError

__all__ = ["MergeError", "MergedAdapter", "check_mergeable", "parse_weights", "parse_merge_arg"]

MAX_MERGED = 8
MAX_ABS_WEIGHT = 16.0


class MergeError(LoraCodecError):
    """The codes cannot be merged (other backbone, geometry or adapter structure), or bad weights."""


def parse_weights(text: str | None, count: int) -> list[float]:
    """`--weights 0.5,0.5` -> [0.5, 0.5] (one per code, first code first); None -> 1 for every code."""
    if text is None or str(text).strip() == "":
        return [1.0] * count
    try:
        vals = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise MergeError(f"--weights must be comma-separated numbers, one per code, got '{text}'") from None
    if len(vals) != count:
        raise MergeError(f"--weights gives {len(vals)} numbers for {count} codes (the code and each --merge)")
    return check_weights(vals)


def check_weights(vals) -> list[float]:
    vals = [float(v) for v in vals]
    for v in vals:
        if not (math.isfinite(v) and abs(v) <= MAX_ABS_WEIGHT):
            raise MergeError(f"a merge weight must be a finite number within +-{MAX_ABS_WEIGHT:g}, got {v:g}")
    return vals


def parse_merge_arg(text: str) -> tuple[str, float | None]:
    """`B.vov` -> ('B.vov', None); `B.vov:0.5` -> ('B.vov', 0.5). A ':' followed by something that is
    not a number stays part of the file name."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, check_weights([float(tail)])[0]
        except ValueError:
            pass
    return text, None


def _structure(code) -> tuple:
    return (tuple(code.targets), code.rank, code.theta_length, code.proj_seed)


def _shown(code) -> str:
    """What a code decodes to, as a person sees it: 'a 112x64 picture' or '75 frames of 112x64' (all
    segments of a long clip, not one segment's length)."""
    if code.output_frames == 1:
        return f"a {code.width}x{code.height} picture"
    return f"{code.output_frames} frames of {code.width}x{code.height}"


def check_mergeable(codes, names=None) -> None:
    """Raise MergeError unless every code can be merged with the first (see the module docstring)."""
    if len(codes) > MAX_MERGED:
        raise MergeError(f"at most {MAX_MERGED} codes can be merged, got {len(codes)}")
    names = list(names) if names else [f"code {i + 1}" for i in range(len(codes))]
    first = codes[0]
    for name, c in zip(names[1:], codes[1:]):
        if c.model != first.model:
            raise MergeError(f"cannot merge: {name} was made with the '{c.model}' backbone, {names[0]} with "
                             f"'{first.model}'")
        if c.fingerprint != first.fingerprint:
            raise MergeError(f"cannot merge: {name} and {names[0]} were made with other '{c.model}' weights "
                             f"(fingerprints {c.fingerprint.hex()} and {first.fingerprint.hex()})")
        if (c.frames, c.height, c.width) != (first.frames, first.height, first.width):
            raise MergeError(f"cannot merge: {name} codes {_shown(c)}, {names[0]} {_shown(first)} (the geometry "
                             f"must match)")
        if _structure(c) != _structure(first):
            what = [k for k, a, b in zip(("targets", "rank", "theta length", "index seed"), _structure(c),
                                         _structure(first)) if a != b]
            raise MergeError(f"cannot merge: {name} has another adapter structure than {names[0]} "
                             f"({', '.join(what)} differ)")
        starts_c = [s.start for s in c.segment_list]
        starts_f = [s.start for s in first.segment_list]
        if starts_c != starts_f or c.output_frames != first.output_frames:
            raise MergeError(f"cannot merge: {name} has {c.n_segments} segment(s) over {c.output_frames} frames, "
                             f"{names[0]} {first.n_segments} over {first.output_frames}; the segments must match")


class MergedAdapter:
    """Adapters of one or more codes of the same structure on a backbone transformer, all active,
    code k's update weighted by `weights[k]` (see the module docstring). `set_segment(i)` loads every
    code's theta of segment i; `detach()` gives back the plain transformer. With one code and weight
    1 it computes exactly what `adapter.Adapter` does."""

    def __init__(self, transformer: torch.nn.Module, codes, weights=None):
        from peft import get_peft_model
        from peft.tuners.unilora.layer import UniLoraLayer

        if not codes:
            raise MergeError("no code to decode")
        check_mergeable(codes)
        weights = check_weights(weights if weights is not None else [1.0] * len(codes))
        if len(weights) != len(codes):
            raise MergeError(f"{len(weights)} weights for {len(codes)} codes")
        first = codes[0]
        if not 1 <= first.rank <= MAX_RANK:
            raise LimitError(f"adapter rank {first.rank} is outside 1..{MAX_RANK}")
        if not 1 <= first.theta_length <= MAX_THETA_LENGTH:
            raise LimitError(f"theta length {first.theta_length} is outside 1..{MAX_THETA_LENGTH}")
        self.codes = list(codes)
        self.weights = weights
        cfg = AdapterConfig(targets=tuple(first.targets), rank=first.rank, theta_length=first.theta_length,
                            proj_seed=first.proj_seed)
        self.names = [ADAPTER_NAME] + [f"merged{k}" for k in range(1, len(codes))]
        state = torch.random.get_rng_state()  # peft draws the (overwritten) initial thetas from it
        self.model = None
        try:
            self.model = get_peft_model(transformer, cfg.peft_config())
            with warnings.catch_warnings():  # peft warns that several adapters are what we ask for
                warnings.simplefilter("ignore", UserWarning)
                for name in self.names[1:]:
                    self.model.add_adapter(name, cfg.peft_config())
            self.model.base_model.set_adapter(self.names, inference_mode=True)
            layers = [m for m in self.model.modules() if isinstance(m, UniLoraLayer)]
            if not layers:
                raise LoraCodecError(f"no layer of the backbone matches the adapter targets {list(cfg.targets)}")
            with torch.no_grad():
                for name, w in zip(self.names, weights):
                    if w != 1.0:
                        for layer in layers:
                            layer.unilora_scales_A[name] = layer.unilora_scales_A[name] * w
        except BaseException:
            if self.model is not None:  # peft injected its layers in place: take them out again
                self.model.unload()
            raise
        finally:
            torch.random.set_rng_state(state)
        self.segment = None

    @property
    def _thetas(self):
        return self.model.base_model.unilora_theta_d

    @torch.no_grad()
    def set_segment(self, index: int) -> None:
        """Every code's theta_hat = q * s of segment `index` (float32, computed on the CPU)."""
        for name, code in zip(self.names, self.codes):
            seg = code.segment_list[index]
            theta = self._thetas[name]
            theta.copy_(dequantise(seg.symbols, seg.step_size).to(theta.device, theta.dtype))
        self.segment = index

    def detach(self):
        return self.model.unload()

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def check_backbone(backbone, code) -> None:
    """The checks of `codec.attach_code_adapter`: the code was made with this backbone's weights."""
    if code.model != backbone.name:
        raise BackboneError(f"this code was made with the '{code.model}' backbone; it cannot be decoded with "
                            f"'{backbone.name}'")
    if code.fingerprint not in backbone.fingerprints:
        raise BackboneError(
            f"this code was made with other '{code.model}' weights (fingerprint {code.fingerprint.hex()}, "
            f"loaded {backbone.fingerprint.hex()}); decoding it would give garbage")


def weights_note(names, weights) -> str:
    return " + ".join(f"{w:g} x {n}" for n, w in zip(names, weights))


__all__ += ["check_backbone", "weights_note", "MAX_MERGED"]
