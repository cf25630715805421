"""Inference-time scaling: the best-of-N refinement track (METHOD.md section 5).

Written by hand because no library provides it: a sampler that, at encode time, steers the
decoder's own stochastic trajectory towards the original clip by choosing among N reproducible
candidate noises per step, and a decoder that replays the chosen indices. Pieces:

* **Candidate noise** ``z_k`` for (seed, step, k): a counter-based generator, Philox4x32-10
  (Salmon et al., SC'11; checked against the Random123 known-answer vectors in the tests), keyed by
  the code's noise seed, counter ``(block j, candidate k, step, "RFN1")``; each 128-bit block gives
  four normals by Box-Muller. Any ``z_k`` is a pure function of (seed, step, k): the decoder draws
  only the chosen one, and the integers are the same on every device (only the float rounding of
  log/cos/sin can differ between devices). Implemented with numpy on the CPU and with torch int64
  ops on an accelerator (the multiplications split into 16-bit halves so nothing overflows).
* **The SDE step** (flow-matching convention of `sampling.py`, x = (1-sigma) x0 + sigma eps,
  v = eps - x0), with sigma -> sigma' and dt = sigma' - sigma < 0:
  ``g = min(sqrt(2 sigma / (1 - sigma)), 5)``, ``h = sqrt(|dt|) g``,
  model score ``s = -(x + (1-sigma) v) / sigma``, ``mu_p = x + dt (v - g^2 s / 2)``,
  target score ``s* = -(x - (1-sigma) x_ref) / sigma^2``, ``v* = (x - x_ref) / sigma`` (the same as
  METHOD's ``(-sigma s* - x) / (1-sigma)``, written so that sigma = 1 is not 0/0),
  ``mu_q = x + dt (v* - g^2 s* / 2)``, ``D = mu_p - mu_q`` and ``x' = mu_p + h z_k*``.
* **Selection**: ``k* = argmax_k [-<D, z_k> / h + G_k]`` (``log q - log p`` up to a constant that
  does not depend on k) with Gumbel noise ``G_k`` (default; sampling from the importance weights
  q/p) or without it (``greedy``). The scores need one dot product per candidate; candidates are
  generated block by block and never kept.
* **The track**: section 1 of the code file (layout in docs/FORMAT.md): its schedule, log2 N and
  the indices, ``log2 N`` bits per indexed step. Steps outside the indexed range (and the last step,
  always) are plain Euler ODE steps, so a prefix of the track decodes: replay K indices, then the ODE.

The encoder regenerates ``z_k*`` with the decoder's function (`candidate_noise`) before stepping, so
on one machine the decoder's replayed latents equal the encoder's bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
from typing import Callable

import numpy as np
import torch

from .bitstream import SECTION_REFINEMENT
from .entropy import ByteReader, write_uvarint
from .errors import CodeFormatError, LoraCodecError
from .sampling import euler_step

__all__ = [
    "RefinementError",
    "Track",
    "candidate_noise",
    "candidate_dots",
    "philox4x32",
    "step_coefficients",
    "StepCoefficients",
    "sde_mean",
    "sde_sample",
    "target_mean",
    "ode_step",
    "record",
    "RecordResult",
    "replay",
    "pack_track",
    "unpack_track",
    "read_track",
    "section_bytes",
    "check_n",
    "check_steps",
    "check_select",
    "resolve_indexed",
    "parse_refine",
    "SELECT_MODES",
    "TRACK_VERSION",
    "MAX_N",
]

TRACK_VERSION = 1
MAX_LOG2_N = 16
MAX_N = 1 << MAX_LOG2_N
MAX_STEPS = 10000
G_MAX = 5.0
SELECT_MODES = {"gumbel": 0, "greedy": 1}
NOISE_DOMAIN = 0x52464E31  # "RFN1": counter word 3, separates this noise from any other use of the seed

_FLAG_SHIFT = 0x01  # an explicit f32 shift follows (else: the code's shift)
_FLAG_GREEDY = 0x02  # selection was greedy (informative; the decoder does not need it)
_FLAGS_KNOWN = _FLAG_SHIFT | _FLAG_GREEDY

_MASK = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_TWO_PI = 2.0 * math.pi
_2M32 = 2.0**-32

ProgressFn = Callable[[int, int], None]


class RefinementError(LoraCodecError):
    """A refinement-track setting or request is invalid (N, steps, indexed range, --refine K)."""


# ---------------------------------------------------------------------------------------------
# counter-based candidate noise
# ---------------------------------------------------------------------------------------------


def _key(seed: int) -> tuple[int, int]:
    seed = int(seed) % (1 << 64)
    return seed & _MASK, seed >> 32


def _key_schedule(k0: int, k1: int) -> list[tuple[int, int]]:
    keys = []
    for _ in range(10):
        keys.append((k0, k1))
        k0, k1 = (k0 + _PHILOX_W0) & _MASK, (k1 + _PHILOX_W1) & _MASK
    return keys


# Both implementations keep the four counter words as two stacked pairs, A = (c0, c2) and B = (c1, c3),
# so that a round is one multiply of A by (M0, M1) and a few whole-array operations:
#   (c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
# i.e. A <- reversed(hi(A * M)) ^ B ^ (k0, k1) and B <- reversed(lo(A * M)).
# The output words are w0, w1, w2, w3 = A[0], B[0], A[1], B[1].


def _philox_numpy(c0, c1, c2, c3, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Philox4x32-10 on numpy uint64 arrays holding 32-bit values (broadcast together): (A, B)."""
    shape = np.broadcast_shapes(np.shape(c0), np.shape(c1), np.shape(c2), np.shape(c3))
    col = (2,) + (1,) * len(shape)
    a = np.empty((2,) + shape, dtype=np.uint64)
    b = np.empty((2,) + shape, dtype=np.uint64)
    a[0], a[1], b[0], b[1] = c0, c2, c1, c3
    m = np.array([_PHILOX_M0, _PHILOX_M1], dtype=np.uint64).reshape(col)
    shift, mask = np.uint64(32), np.uint64(_MASK)
    for r0, r1 in _key_schedule(k0, k1):
        p = a * m
        a = (p >> shift)[::-1] ^ b ^ np.array([r0, r1], dtype=np.uint64).reshape(col)
        b = (p & mask)[::-1]
    return a, b


def _philox_torch(c0, c1, c2, c3, k0: int, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 torch tensors holding 32-bit values (broadcast together): (A, B).

    The 32x32-bit products are formed from 16-bit halves of the multipliers, so no intermediate
    exceeds 2^49 (signed int64 overflow is never relied on)."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c) for c in (c0, c1, c2, c3)))
    dev = c0.device
    col = (2,) + (1,) * c0.dim()
    a = torch.stack((c0, c2)).to(torch.int64)
    b = torch.stack((c1, c3)).to(torch.int64)
    m_lo = torch.tensor([_PHILOX_M0 & 0xFFFF, _PHILOX_M1 & 0xFFFF], dtype=torch.int64, device=dev).view(col)
    m_hi = torch.tensor([_PHILOX_M0 >> 16, _PHILOX_M1 >> 16], dtype=torch.int64, device=dev).view(col)
    for r0, r1 in _key_schedule(k0, k1):
        p_lo = a * m_lo
        p_hi = a * m_hi
        t = p_lo + ((p_hi & 0xFFFF) << 16)
        hi = (p_hi >> 16) + (t >> 32)
        a = hi.flip(0) ^ b ^ torch.tensor([r0, r1], dtype=torch.int64, device=dev).view(col)
        b = (t & _MASK).flip(0)
    return a, b


def philox4x32(counter: tuple[int, int, int, int], key: tuple[int, int], *, backend: str = "numpy") -> tuple[int, ...]:
    """One Philox4x32-10 block (for tests and documentation): 4 words from a 4-word counter and 2-word key."""
    if backend == "numpy":
        a, b = _philox_numpy(*[np.array(c, dtype=np.uint64) for c in counter], *key)
    else:
        a, b = _philox_torch(*[torch.tensor(c, dtype=torch.int64) for c in counter], *key)
    return tuple(int(w) for w in (a[0], b[0], a[1], b[1]))


def _normals_numpy(ab, exact: bool) -> np.ndarray:
    """Box-Muller on each block's four words -> float32 normals, last axis = the block's 4 lanes:
    (r cos t, r sin t) from words (w0, w1), then from (w2, w3); r = sqrt(-2 ln u(w_even)),
    t = 2 pi u(w_odd), u(w) = (w + 1/2) / 2^32. `ab` = (A, B) = ((w0, w2), (w1, w3))."""
    a, b = ab
    u1 = (a + 0.5) * _2M32  # float64, exact, in (0, 1)
    angle = (b + 0.5) * (_TWO_PI * _2M32)
    if exact:
        r = np.sqrt(-2.0 * np.log(u1))
        c, s = (r * np.cos(angle)).astype(np.float32), (r * np.sin(angle)).astype(np.float32)
    else:  # the encoder's scoring: float32 transcendental functions (vectorised)
        r = np.sqrt(-2.0 * np.log(u1.astype(np.float32)))
        a32 = angle.astype(np.float32)
        c, s = r * np.cos(a32), r * np.sin(a32)
    return np.stack((c[0], s[0], c[1], s[1]), axis=-1)


def _normals_torch(ab, exact: bool) -> torch.Tensor:
    """`_normals_numpy` with torch ops (on the words' device)."""
    a, b = ab
    u1 = (a.double() + 0.5) * _2M32
    angle = (b.double() + 0.5) * (_TWO_PI * _2M32)
    if exact:
        r = torch.sqrt(-2.0 * torch.log(u1))
        c, s = (r * torch.cos(angle)).float(), (r * torch.sin(angle)).float()
    else:
        r = torch.sqrt(-2.0 * torch.log(u1.float()))
        a32 = angle.float()
        c, s = r * torch.cos(a32), r * torch.sin(a32)
    return torch.stack((c[0], s[0], c[1], s[1]), dim=-1)


def _use_torch(device: torch.device, backend: str | None) -> bool:
    """numpy on the CPU, torch on an accelerator (`backend` forces one: 'numpy' needs the CPU)."""
    if backend is None:
        return device.type != "cpu"
    if backend not in ("numpy", "torch") or (backend == "numpy" and device.type != "cpu"):
        raise ValueError(f"bad noise backend {backend!r} for device {device}")
    return backend == "torch"


def candidate_noise(seed: int, step, k, n: int, device: torch.device | str = "cpu", *,
                    backend: str | None = None) -> torch.Tensor:
    """Candidate noise z_k of step `step`: n float32 standard normals (a flat tensor on `device`).

    A pure function of (seed, step, k): what the decoder draws for the index it reads, and what the
    encoder steps with after choosing it. On the CPU it is computed with numpy (float64 Box-Muller,
    rounded to float32); on an accelerator with the same integer stream on the device. `step` and `k`
    may also be equal-length sequences: the result is then [len, n], row r equal to the noise of
    (step[r], k[r]) (every operation is elementwise, so batching does not change a value)."""
    device = torch.device(device)
    k0, k1 = _key(seed)
    blocks = (int(n) + 3) // 4
    batched = np.ndim(step) > 0 or np.ndim(k) > 0
    steps_, ks_ = (np.array(a) for a in np.broadcast_arrays(np.asarray(step, dtype=np.int64).reshape(-1),
                                                            np.asarray(k, dtype=np.int64).reshape(-1)))
    rows = steps_.shape[0]
    if _use_torch(device, backend):
        j = torch.arange(blocks, dtype=torch.int64, device=device).view(1, -1)
        kt = torch.as_tensor(ks_, device=device).view(-1, 1)
        st = torch.as_tensor(steps_, device=device).view(-1, 1)
        dom = torch.tensor(NOISE_DOMAIN, dtype=torch.int64, device=device)
        z = _normals_torch(_philox_torch(j, kt, st, dom, k0, k1), exact=True).reshape(rows, -1)[:, :n]
        z = z.contiguous()
    else:
        j = np.arange(blocks, dtype=np.uint64).reshape(1, -1)
        words = _philox_numpy(j, ks_.astype(np.uint64).reshape(-1, 1), steps_.astype(np.uint64).reshape(-1, 1),
                              np.uint64(NOISE_DOMAIN), k0, k1)
        z = torch.from_numpy(np.ascontiguousarray(_normals_numpy(words, exact=True).reshape(rows, -1)[:, :n]))
    return z if batched else z[0]


def candidate_dots(seed: int, step: int, d: torch.Tensor, count: int, *, block_normals: int | None = None,
                   fast: bool = True, backend: str | None = None) -> np.ndarray:
    """<d, z_k> for k < count (float64 numpy array), generating the candidates block by block.

    `d` is the flat float32 direction on the compute device; the candidates are generated there (numpy
    on the CPU, torch elsewhere) in pieces of about `block_normals` numbers, so no candidate tensor
    is kept. `fast` uses float32 log/cos/sin for the normals (they agree with `candidate_noise` to
    ~1e-6); the chosen candidate is always regenerated exactly with `candidate_noise`."""
    n = int(d.numel())
    blocks = (n + 3) // 4
    k0, k1 = _key(seed)
    dots = np.zeros(int(count), dtype=np.float64)
    on_device = _use_torch(d.device, backend)
    if on_device:  # filled on the device, read back once (no synchronisation per piece)
        dots_t = torch.zeros(int(count), dtype=torch.float64, device=d.device)
    if block_normals is None:
        block_normals = (1 << 24) if on_device else (1 << 16)
    block_blocks = max(1, int(block_normals) // 4)
    pad = blocks * 4 - n
    if on_device:
        dv = torch.nn.functional.pad(d.reshape(-1).float(), (0, pad)).view(blocks, 4)
        step_t = torch.tensor(step, dtype=torch.int64, device=d.device)
        dom_t = torch.tensor(NOISE_DOMAIN, dtype=torch.int64, device=d.device)
    else:
        dv = np.pad(d.detach().reshape(-1).float().cpu().numpy(), (0, pad)).reshape(blocks, 4)
        step_np, dom_np = np.uint64(step), np.uint64(NOISE_DOMAIN)
    if blocks <= block_blocks:
        # several whole candidates per piece: a [kc, blocks] grid, one matrix-vector product
        kc = max(1, block_blocks // blocks)
        dflat = dv.reshape(-1)
        for lo in range(0, count, kc):
            hi = min(count, lo + kc)
            if on_device:
                ks = torch.arange(lo, hi, dtype=torch.int64, device=d.device).view(-1, 1)
                j = torch.arange(blocks, dtype=torch.int64, device=d.device).view(1, -1)
                z = _normals_torch(_philox_torch(j, ks, step_t, dom_t, k0, k1), exact=not fast)
                dots_t[lo:hi] = torch.mv(z.reshape(hi - lo, -1), dflat).double()
            else:
                ks = np.arange(lo, hi, dtype=np.uint64).reshape(-1, 1)
                j = np.arange(blocks, dtype=np.uint64).reshape(1, -1)
                z = _normals_numpy(_philox_numpy(j, ks, step_np, dom_np, k0, k1), exact=not fast)
                dots[lo:hi] = z.reshape(hi - lo, -1) @ dflat
        return dots_t.cpu().numpy() if on_device else dots
    # large candidates: each one in slices of its blocks, partial dot products summed
    for k in range(count):
        for j0 in range(0, blocks, block_blocks):
            j1 = min(blocks, j0 + block_blocks)
            if on_device:
                j = torch.arange(j0, j1, dtype=torch.int64, device=d.device)
                kt = torch.tensor(k, dtype=torch.int64, device=d.device)
                z = _normals_torch(_philox_torch(j, kt, step_t, dom_t, k0, k1), exact=not fast)
                dots_t[k] += torch.dot(z.reshape(-1), dv[j0:j1].reshape(-1)).double()
            else:
                j = np.arange(j0, j1, dtype=np.uint64)
                z = _normals_numpy(_philox_numpy(j, np.uint64(k), step_np, dom_np, k0, k1), exact=not fast)
                dots[k] += float(z.reshape(-1) @ dv[j0:j1].reshape(-1))
    return dots_t.cpu().numpy() if on_device else dots


# ---------------------------------------------------------------------------------------------
# the SDE step
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepCoefficients:
    """Python-float coefficients of one step sigma -> sigma_next (computed in float64).

    mu_p = cx * x + cv * v;  mu_q = qx * x + qr * x_ref;  x' = mu_p + h * z."""

    sigma: float
    sigma_next: float
    dt: float
    g: float
    h: float
    cx: float
    cv: float
    qx: float
    qr: float


def step_coefficients(sigma: float, sigma_next: float) -> StepCoefficients:
    sigma, sigma_next = float(sigma), float(sigma_next)
    if not 0.0 < sigma <= 1.0 or not 0.0 <= sigma_next < sigma:
        raise RefinementError(f"invalid SDE step sigma {sigma} -> {sigma_next}")
    dt = sigma_next - sigma
    g = G_MAX if sigma >= 1.0 else min(math.sqrt(2.0 * sigma / (1.0 - sigma)), G_MAX)
    h = math.sqrt(-dt) * g
    a = dt * g * g / (2.0 * sigma)  # -dt g^2 s / 2 = a (x + (1 - sigma) v)
    cx, cv = 1.0 + a, dt + a * (1.0 - sigma)
    b = a / sigma
    qx, qr = 1.0 + dt / sigma + b, -(dt / sigma + b * (1.0 - sigma))
    return StepCoefficients(sigma, sigma_next, dt, g, h, cx, cv, qx, qr)


def sde_mean(x: torch.Tensor, v: torch.Tensor, c: StepCoefficients) -> torch.Tensor:
    """The model's step mean mu_p = x + dt (v - g^2 s / 2)."""
    return c.cx * x + c.cv * v


def sde_sample(mu: torch.Tensor, c: StepCoefficients, z: torch.Tensor) -> torch.Tensor:
    return mu + c.h * z


def target_mean(x: torch.Tensor, x_ref: torch.Tensor, c: StepCoefficients) -> torch.Tensor:
    """The step mean towards the original latent: mu_q = x + dt (v* - g^2 s* / 2)."""
    return c.qx * x + c.qr * x_ref


ode_step = euler_step  # the plain decoder's step, shared so a truncated replay continues exactly like it


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


def check_n(n) -> int:
    """N must be a power of two in 2..65536; returns log2 N."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise RefinementError(f"--refine-n must be an integer power of two in 2..{MAX_N}, got {n!r}")
    n = int(n)
    if n < 2 or n > MAX_N or n & (n - 1):
        raise RefinementError(f"--refine-n must be a power of two in 2..{MAX_N}, got {n}")
    return n.bit_length() - 1


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= int(steps) <= MAX_STEPS:
        raise RefinementError(f"--refine-steps must be an integer in 2..{MAX_STEPS}, got {steps!r}")
    return int(steps)


def check_select(select) -> str:
    if select not in SELECT_MODES:
        raise RefinementError(f"--refine-select must be one of {', '.join(SELECT_MODES)}, got {select!r}")
    return select


def resolve_indexed(steps: int, indexed=None) -> tuple[int, int]:
    """Which steps carry an index: (first, count), the steps first .. first+count-1.

    `indexed` is None (all but the last: steps 0 .. S-2), a (start, stop) pair, or a string
    'START:STOP' (Python slice of the step numbers; either side may be empty, negatives count from
    S). The last step (to sigma = 0) never carries an index."""
    steps = check_steps(steps)
    if indexed is None:
        return 0, steps - 1
    if isinstance(indexed, str):
        parts = indexed.split(":")
        if len(parts) != 2:
            raise RefinementError(f"--refine-indexed must look like START:STOP, got {indexed!r}")
        try:
            start = int(parts[0]) if parts[0].strip() else None
            stop = int(parts[1]) if parts[1].strip() else None
        except ValueError:
            raise RefinementError(f"--refine-indexed must look like START:STOP (integers), got {indexed!r}") from None
    else:
        try:
            start, stop = indexed
        except (TypeError, ValueError):
            raise RefinementError(f"the indexed steps must be a (start, stop) pair, got {indexed!r}") from None
    last = steps - 1  # exclusive bound: the last step is deterministic
    start = 0 if start is None else int(start)
    stop = last if stop is None else int(stop)
    if start < 0:
        start += steps
    if stop < 0:
        stop += steps
    if not 0 <= start < stop <= last:
        raise RefinementError(
            f"--refine-indexed {indexed if isinstance(indexed, str) else tuple(indexed)} is not a non-empty range "
            f"of steps within 0..{last - 1} (the last of the {steps} steps never carries an index)")
    return start, stop - start


def parse_refine(value) -> str | int:
    """--refine: 'all', 'none', or K >= 0 (the number of indexed steps to replay)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise RefinementError(f"--refine K must be >= 0, got {value}")
        return int(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("all", "none"):
            return v
        if v.isdigit():
            return int(v)
    raise RefinementError(f"--refine must be 'all', 'none' or a number of steps K >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------
# the track and its bytes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=True)
class Track:
    """A refinement track: the schedule it was recorded on and one index per indexed step.

    steps: sampling steps S of the schedule; shift: its flow shift (float32); log2_n: bits per index;
    first: the first indexed step; indices: the chosen candidates (steps first .. first+len-1);
    select: how they were chosen ('gumbel' or 'greedy'; informative)."""

    steps: int
    shift: float
    log2_n: int
    first: int
    indices: tuple[int, ...]
    select: str = "gumbel"

    @property
    def n(self) -> int:
        return 1 << self.log2_n

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def bits(self) -> int:
        return self.count * self.log2_n

    def truncated(self, k: int) -> "Track":
        """The first k indices (a valid track: the rest of the schedule is decoded with the ODE)."""
        if not 0 <= k <= self.count:
            raise RefinementError(f"cannot keep {k} indices of a track of {self.count}")
        return dataclasses.replace(self, indices=self.indices[:k])


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def _header(track_or_fields, code_shift: float) -> bytearray:
    steps, shift, log2_n, first, count, select = track_or_fields
    flags = 0
    if _f32(shift) != _f32(code_shift):
        flags |= _FLAG_SHIFT
    if select == "greedy":
        flags |= _FLAG_GREEDY
    out = bytearray([TRACK_VERSION, flags])
    write_uvarint(out, steps)
    if flags & _FLAG_SHIFT:
        out += struct.pack("<f", float(shift))
    out.append(log2_n)
    write_uvarint(out, first)
    write_uvarint(out, count)
    return out


def _validate_fields(steps, shift, log2_n, first, count) -> None:
    if not 2 <= steps <= MAX_STEPS:
        raise CodeFormatError(f"corrupt refinement track: steps {steps} out of range [2, {MAX_STEPS}]")
    if not math.isfinite(shift):
        raise CodeFormatError("corrupt refinement track: shift is not finite")
    if not 1 <= log2_n <= MAX_LOG2_N:
        raise CodeFormatError(f"corrupt refinement track: log2 N = {log2_n} out of range [1, {MAX_LOG2_N}]")
    if first + count > steps - 1:
        raise CodeFormatError(f"corrupt refinement track: indexed steps {first}..{first + count - 1} go beyond step "
                              f"{steps - 2} (the last of {steps} steps is deterministic)")


def pack_track(track: Track, code_shift: float) -> bytes:
    """The section-1 bytes (docs/FORMAT.md, *Refinement track*). `code_shift` is the code's shift:
    the track stores its own only when it differs."""
    _validate_fields(track.steps, _f32(track.shift), track.log2_n, track.first, track.count)
    check_select(track.select)
    out = _header((track.steps, track.shift, track.log2_n, track.first, track.count, track.select), code_shift)
    idx = np.asarray(track.indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= track.n):
        raise CodeFormatError(f"corrupt refinement track: an index is outside 0..{track.n - 1}")
    out += _pack_bits(idx, track.log2_n)
    return bytes(out)


def _pack_bits(values: np.ndarray, width: int) -> bytes:
    """Fixed-width, most significant bit first, zero-padded to a whole byte."""
    if values.size == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((values.reshape(-1, 1) >> shifts) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits).tobytes()


def _unpack_bits(data: bytes, width: int, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    used = bits[: count * width].reshape(count, width).astype(np.int64)
    if bits[count * width:].any():
        raise CodeFormatError("corrupt refinement track: nonzero padding bits after the last index")
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return used @ weights


def unpack_track(blob: bytes, code_shift: float) -> Track:
    """Parse section 1 (CodeFormatError on anything malformed)."""
    r = ByteReader(bytes(blob), "refinement track")
    version = r.u8("version")
    if version != TRACK_VERSION:
        raise CodeFormatError(f"unsupported refinement track version {version} (this build reads {TRACK_VERSION})")
    flags = r.u8("flags")
    if flags & ~_FLAGS_KNOWN:
        raise r.fail(f"unknown flag bits 0x{flags & ~_FLAGS_KNOWN:02x}")
    steps = r.uvarint("steps", 2, MAX_STEPS)
    if flags & _FLAG_SHIFT:
        (shift,) = struct.unpack("<f", r.take(4, "shift"))
    else:
        shift = _f32(code_shift)
    log2_n = r.u8("log2 N")
    first = r.uvarint("first indexed step", 0, MAX_STEPS)
    count = r.uvarint("indexed steps", 0, MAX_STEPS)
    _validate_fields(steps, shift, log2_n, first, count)
    nbytes = (count * log2_n + 7) // 8
    if r.remaining != nbytes:
        raise r.fail(f"{r.remaining} bytes of indices, expected {nbytes} ({count} x {log2_n} bits)")
    indices = _unpack_bits(r.take(nbytes, "indices"), log2_n, count)
    select = "greedy" if flags & _FLAG_GREEDY else "gumbel"
    return Track(steps=steps, shift=float(shift), log2_n=log2_n, first=first,
                 indices=tuple(int(i) for i in indices), select=select)


def read_track(code) -> Track | None:
    """The code's refinement track, or None when it has none."""
    blob = code.sections.get(SECTION_REFINEMENT)
    return None if blob is None else unpack_track(blob, code.shift)


def section_bytes(steps: int, log2_n: int, first: int, count: int, *, code_shift: float = 0.0,
                  shift: float | None = None) -> int:
    """Bytes the track adds to a code file: section tag + length varint + header + indices."""
    body = len(_header((steps, code_shift if shift is None else shift, log2_n, first, count, "gumbel"), code_shift))
    body += (count * log2_n + 7) // 8
    ln = bytearray()
    write_uvarint(ln, body)
    return 1 + len(ln) + body


# ---------------------------------------------------------------------------------------------
# encoder (record) and decoder (replay)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordResult:
    indices: np.ndarray  # int64, one per indexed step
    latents: torch.Tensor  # the trajectory's final latents (device)
    seconds: float
    select_seconds: float  # time spent scoring candidates
    candidates: int  # candidates scored in all


def record(velocity, noise: torch.Tensor, x_ref: torch.Tensor, sigmas: np.ndarray, *, seed: int, n: int,
           first: int, count: int, select: str = "gumbel", gumbel_seed: int = 0,
           progress: ProgressFn | None = None, block_normals: int | None = None) -> RecordResult:
    """Run the decoder's sampler as the SDE over the indexed steps, choosing among `n` candidate
    noises per step the one that moves towards `x_ref` (n = 1 is the plain SDE, no choice).

    `velocity` is the decoder's exact `sampling.Velocity`; `noise` its initial noise; `seed` keys the
    candidate noise (the code's noise seed). Returns the chosen indices and the final latents."""
    check_select(select)
    if n < 1 or n > MAX_N or n & (n - 1):
        raise RefinementError(f"the number of candidates must be a power of two in 1..{MAX_N}, got {n}")
    steps = len(sigmas) - 1
    if not (0 <= first and first + count <= steps - 1):
        raise RefinementError(f"indexed steps {first}..{first + count - 1} do not fit a schedule of {steps} steps")
    device = velocity.device
    x = noise.to(device, torch.float32)
    ref = x_ref.to(device, torch.float32)
    if ref.shape != x.shape:
        raise RefinementError(f"the clip's latents {tuple(ref.shape)} do not match the code's {tuple(x.shape)}")
    numel = x.numel()
    chosen = np.zeros(count, dtype=np.int64)
    t0 = time.perf_counter()
    t_select = 0.0
    for i in range(steps):
        v = velocity(x, sigmas[i])
        if first <= i < first + count:
            c = step_coefficients(sigmas[i], sigmas[i + 1])
            mu = sde_mean(x, v, c)
            k = 0
            if n > 1:
                ts = time.perf_counter()
                d = (mu - target_mean(x, ref, c)).reshape(-1)
                scores = -candidate_dots(seed, i, d, n, block_normals=block_normals) / c.h
                if select == "gumbel":
                    rng = np.random.default_rng([int(gumbel_seed) % (1 << 64), i, 0x47554D42])
                    scores = scores + rng.gumbel(size=n)
                k = int(np.argmax(scores))
                t_select += time.perf_counter() - ts
            chosen[i - first] = k
            z = candidate_noise(seed, i, k, numel, device).view_as(x)
            x = sde_sample(mu, c, z)
        else:
            x = ode_step(x, v, sigmas[i], sigmas[i + 1])
        if progress is not None:
            progress(i + 1, steps)
    return RecordResult(indices=chosen, latents=x, seconds=time.perf_counter() - t0, select_seconds=t_select,
                        candidates=count * n if n > 1 else 0)


def replay(velocity, noise: torch.Tensor, track: Track, sigmas: np.ndarray, *, seed: int, limit: int | None = None,
           progress: ProgressFn | None = None) -> torch.Tensor:
    """The decoder: replay the first `limit` indices of the track (all by default) as SDE steps with
    the regenerated chosen noises; every other step is the plain Euler ODE step on the same schedule."""
    steps = len(sigmas) - 1
    if steps != track.steps:
        raise RefinementError(f"the schedule has {steps} steps, the track {track.steps}")
    k_max = track.count if limit is None else int(limit)
    if not 0 <= k_max <= track.count:
        raise RefinementError(f"--refine {k_max}: the track has {track.count} indexed steps")
    device = velocity.device
    x = noise.to(device, torch.float32)
    numel = x.numel()
    # The chosen noises are known up front: draw them a batch of steps at a time (the same values as
    # one by one; batching only saves per-call overhead, which matters for small latents).
    batch = max(1, (1 << 22) // numel)
    ready: dict[int, torch.Tensor] = {}
    for i in range(steps):
        v = velocity(x, sigmas[i])
        j = i - track.first
        if 0 <= j < k_max:
            if j not in ready:
                hi = min(k_max, j + batch)
                zs = candidate_noise(seed, np.arange(track.first + j, track.first + hi), track.indices[j:hi],
                                     numel, device)
                ready = {j + r: zs[r] for r in range(hi - j)}
            c = step_coefficients(sigmas[i], sigmas[i + 1])
            z = ready.pop(j).view_as(x)
            x = sde_sample(sde_mean(x, v, c), c, z)
        else:
            x = ode_step(x, v, sigmas[i], sigmas[i + 1])
        if progress is not None:
            progress(i + 1, steps)
    return x
