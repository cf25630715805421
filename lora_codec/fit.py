"""The encoder's fitting loop: flow matching on one clip's latents, two stages, resumable.

Written by hand because no library provides it: the loss, the stage switch with a learned
quantisation step and a rate term, and an exactly resumable state are specific to this codec
(METHOD.md section 2).

* Stage 1: AdamW on theta only; loss = MSE(model(x_t, 1000 t), eps - x0), `x_t = (1-t) x0 + t eps`.
* Stage 2: straight-through rounding of theta with a learned step `s = softplus(raw_s)`, started from
  theta's spread (`initial_step`: quantisation noise 1/16 of theta's variance), plus a rate
  proxy `-log2 p(theta/s + u)` under a small learned prior (a 3-component logistic mixture), weighted by
  `lambda * ramp` with `ramp` rising linearly over `ramp_steps`.
* Noise mode 'random' draws eps per sample (the paper); 'seed' uses the decoder's own initial noise
  (METHOD.md section 8), which the decoder always starts from; 'mix' uses the seed noise for a share
  `seed_fraction` of the samples and fresh noise for the rest.
* Timesteps: 'uniform' t ~ U(0, 1) (the paper); 'logit-normal' t = sigmoid(N(m, s^2)) (Esser et al. 2024);
  'shifted' uniform warped by the flow shift (the decoder's schedule, as a density); 'grid' the very
  sigmas the decoder's sampler evaluates the model at (`sampling.sigma_schedule(grid_steps, shift)`).
* Learning rate: constant (the paper) or 'cosine' (transformers' linear warm-up over `warmup_steps`, then
  a cosine decay to `min_lr_frac` of the base rate at the end, over both stages).

These are settings of one loop (`FitConfig`); the named presets that combine them are in `recipes.py`.

The fit is anytime: `run()` can stop after any number of steps or seconds; `save()` writes the whole
state (theta, step size, prior, optimiser, step counter, RNG) to a safetensors file (no pickle) and
`Fitter.load()` continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .adapter import INIT_BOUND, Adapter, quantise, step_from_raw
from .errors import LoraCodecError

STATE_VERSION = 1
NOISE_MODES = ("random", "seed", "mix")
TIMESTEP_MODES = ("uniform", "logit-normal", "shifted", "grid")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class FitConfig:
    """Hyper-parameters of the fit (defaults come from the backbone; see `backbones.FitDefaults`).

    Args:
        stage1_steps / stage2_steps: optimiser steps per stage (stage 2 = quantisation + rate term).
        lr1 / lr2: constant AdamW learning rates of the two stages.
        weight_decay: AdamW weight decay on theta.
        batch: samples (timesteps) per step.
        rate_lambda: weight of the rate term (bits per theta entry).
        ramp_steps: the rate weight ramps linearly from 0 over this many stage-2 steps.
        init_raw_step: None (default): stage 2 starts from a step derived from theta's spread at the
            stage switch (`initial_step`); a number: a fixed initial raw step, s = softplus(raw)
            (-2 -> 0.127, the reference code's constant).
        noise_mode: 'random' (paper), 'seed' (fit the decoder's own starting noise) or 'mix'.
        seed_fraction: with 'mix', the probability that a sample uses the decoder's noise.
        timesteps: 'uniform' (paper), 'logit-normal', 'shifted' or 'grid' (see the module docstring).
        logit_mean / logit_std: the logit-normal's parameters (Esser et al. 2024 use 0 and 1).
        shift / grid_steps: the decoder's flow shift and sampling steps ('shifted', 'grid').
        lr_schedule: 'constant' (paper) or 'cosine' (warm-up, then cosine decay over the whole fit).
        warmup_steps / min_lr_frac: the 'cosine' schedule's warm-up length and final fraction of the rate.
        init_scale: theta starts uniform in +-init_scale (None: peft's +-0.02, METHOD.md section 1).
        seed: seeds theta's initialisation and the fit's RNG (timesteps and noise).
    """

    stage1_steps: int = 150
    stage2_steps: int = 100
    lr1: float = 2e-3
    lr2: float = 1.5e-3
    weight_decay: float = 1e-4
    batch: int = 1
    rate_lambda: float = 5e-3
    ramp_steps: int = 500
    init_raw_step: float | None = None
    noise_mode: str = "random"
    seed_fraction: float = 0.5
    timesteps: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 3.0
    grid_steps: int = 20
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_frac: float = 0.1
    init_scale: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.noise_mode not in NOISE_MODES:
            raise LoraCodecError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got '{self.noise_mode}'")
        if self.timesteps not in TIMESTEP_MODES:
            raise LoraCodecError(f"timestep sampling must be one of {', '.join(TIMESTEP_MODES)}, got '{self.timesteps}'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise LoraCodecError(f"learning-rate schedule must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        if not 0.0 <= self.seed_fraction <= 1.0:
            raise LoraCodecError("the seed-noise fraction must be in [0, 1]")
        if self.grid_steps < 1 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_frac <= 1.0 or self.logit_std <= 0:
            raise LoraCodecError("grid steps must be >= 1, warm-up >= 0, the final lr fraction in [0, 1], logit std > 0")
        if self.init_scale is not None and not self.init_scale > 0:
            raise LoraCodecError("theta's initial scale must be > 0 (an all-zero theta gives zero gradients)")
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.batch < 1:
            raise LoraCodecError("fit steps must be >= 0 and batch >= 1")
        if self.rate_lambda < 0:
            raise LoraCodecError("the rate weight (lambda) must be >= 0")

    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


@dataclasses.dataclass
class FitProgress:
    """What the fit reports after each step (through the callback)."""

    step: int
    total: int
    stage: int
    loss: float
    mse: float
    bits_per_entry: float  # ideal bits per theta entry of the current symbols (empirical prior)
    est_payload_bytes: int  # those bits as bytes (payload only)
    step_size: float
    elapsed: float


class LogisticMixturePrior(torch.nn.Module):
    """A differentiable univariate prior over integers (3 logistic components, 9 scalars).

    Used only as the fit's rate proxy; the file stores the exact empirical histogram instead
    (`entropy.py`), so no float prior is ever evaluated at decode time."""

    def __init__(self, components: int = 3):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(components))
        self.means = torch.nn.Parameter(torch.zeros(components))
        self.log_scales = torch.nn.Parameter(torch.linspace(-0.5, 1.5, components))

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        """-log2 P(bin of width 1 centred at y), elementwise."""
        y = y.unsqueeze(-1)
        inv = torch.exp(-self.log_scales)
        upper = torch.sigmoid((y + 0.5 - self.means) * inv)
        lower = torch.sigmoid((y - 0.5 - self.means) * inv)
        w = torch.softmax(self.logits, dim=0)
        p = ((upper - lower) * w).sum(-1)
        return -torch.log2(p.clamp_min(1e-9))


# Stage 2's first step size (see `initial_step`). The quantisation error of a uniform quantiser with
# step s is about s^2 / 12 (uniform within a bin); choosing s^2 / 12 = sigma^2 / 16 (a 12 dB
# signal-to-quantisation-noise ratio) gives s = sqrt(12 / 16) sigma ~ 0.87 sigma, about 2.2 bits per
# entry for a bell-shaped theta (high-resolution entropy ~ log2(sigma / s) + 2.05) - close to the
# published operating point (~1.9 bits per entry, METHOD.md section 2) - and, whatever theta's scale,
# most entries round to non-zero symbols. The reference code's fixed start (softplus(-2) = 0.127) is
# ~10x theta's initial spread (uniform +-0.02): after a short stage 1 every symbol rounds to 0, the
# adapter is empty (A = B = 0 in every layer) and the straight-through gradient vanishes, so the fit
# never leaves the empty code.
QUANT_NOISE_TO_SIGNAL = 1.0 / 16.0
FALLBACK_RAW_STEP = -2.0


def initial_step(theta: torch.Tensor) -> float:
    """Stage 2's initial quantisation step for `theta` (any shape, any float dtype): sqrt(12 r) times
    theta's standard deviation with r = `QUANT_NOISE_TO_SIGNAL` (see the comment above); the reference
    constant softplus(-2) when theta has no spread. Returns a positive float (same units as theta)."""
    sigma = float(theta.detach().float().std()) if theta.numel() > 1 else 0.0
    if not (sigma > 0 and math.isfinite(sigma)):
        return float(F.softplus(torch.tensor(FALLBACK_RAW_STEP)))
    return max(1e-8, math.sqrt(12.0 * QUANT_NOISE_TO_SIGNAL) * sigma)


def raw_from_step(step: float) -> float:
    """The raw parameter whose softplus is `step` (> 0)."""
    return math.log(math.expm1(step)) if step < 20 else step


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


class Fitter:
    """Fits an adapter's theta to one clip's latents. See the module docstring for the method.

    Args:
        adapter: the UniLoRA adapter attached to the backbone transformer.
        latents: normalised clip latents x0, [C, T, H, W] (float32).
        text_emb: caption embedding [1, L, D] on the compute device.
        config: `FitConfig`.
        seed_noise: the decoder's initial noise (same shape as latents), used in 'seed' noise mode.
        device / dtype: compute device and the transformer's dtype.
        grad_sync: data-parallel fitting of one clip: called with the list of trainable tensors after
            each backward, it must replace their `.grad` by the mean over all ranks (e.g.
            `torch.distributed.all_reduce`). Each rank draws its own timesteps/noise (RNG seeded with
            `seed` and `rank`), so N ranks x batch B act as one batch of N*B.
        rank: this process's rank for the RNG stream (0 when not distributed).
        data_digest: identifies the clip and caption a saved state belongs to (default: a hash of the
            latents and the caption embedding).
    """

    def __init__(self, adapter: Adapter, latents: torch.Tensor, text_emb: torch.Tensor, config: FitConfig, *,
                 seed_noise: torch.Tensor | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, grad_sync: Callable[[list], None] | None = None,
                 rank: int = 0, data_digest: str | None = None):
        self.adapter = adapter
        self.grad_sync = grad_sync
        self.rank = int(rank)
        self.cfg = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.x0 = latents.to(self.device, torch.float32)
        self.text_emb = text_emb
        self.seed_noise = None if seed_noise is None else seed_noise.to(self.device, torch.float32)
        if config.noise_mode != "random" and seed_noise is None:
            raise LoraCodecError(f"noise mode '{config.noise_mode}' needs the decoder's initial noise")
        if config.init_scale is not None:  # a fresh start (a resumed state overwrites theta)
            with torch.no_grad():
                adapter.theta.mul_(float(config.init_scale) / INIT_BOUND)
        self._grid = None
        if config.timesteps == "grid":
            from .sampling import sigma_schedule

            # the sigmas the decoder evaluates the model at (the last one, 0, is never evaluated)
            self._grid = torch.tensor(sigma_schedule(config.grid_steps, config.shift)[:-1], dtype=torch.float32)
        # What a saved state is tied to. Callers that rebuild the latents in every call (the web app's
        # GPU slices) pass a digest of the source frames and caption instead: a GPU VAE need not be
        # bit-identical from call to call, the frames are.
        self.data_digest = data_digest or _digest(latents, text_emb.float())
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(config.seed + 1_000_003 * self.rank)
        raw0 = FALLBACK_RAW_STEP if config.init_raw_step is None else float(config.init_raw_step)
        self.raw_step = torch.nn.Parameter(torch.tensor(raw0, device=self.device))
        # whether raw_step holds stage 2's step yet (set at the stage switch, or by `set_step_size`)
        self.step_initialised = config.init_raw_step is not None
        self.prior = LogisticMixturePrior().to(self.device)
        self.step = 0
        self.elapsed = 0.0
        self.optimizer: torch.optim.Optimizer | None = None
        self._opt_stage = 0
        self.last: FitProgress | None = None

    def set_distributed(self, grad_sync: Callable[[list], None] | None, rank: int) -> None:
        """Make this fit one rank of a data-parallel fit (before the first step; see `grad_sync`)."""
        if self.step != 0:
            raise LoraCodecError("data-parallel fitting must be set up before the first step")
        self.grad_sync = grad_sync
        self.rank = int(rank)
        self.gen.manual_seed(self.cfg.seed + 1_000_003 * self.rank)

    # -- stages ---------------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return 1 if self.step < self.cfg.stage1_steps else 2

    @property
    def done(self) -> bool:
        return self.step >= self.cfg.total_steps

    def _ensure_optimizer(self) -> None:
        stage = self.stage
        if self.optimizer is not None and self._opt_stage == stage:
            return
        theta = self.adapter.theta
        if stage == 1:
            groups = [{"params": [theta], "lr": self.cfg.lr1, "weight_decay": self.cfg.weight_decay}]
        else:
            if not self.step_initialised:  # the stage switch: start from theta's spread
                self.set_step_size(initial_step(theta))
            self.adapter.enable_quantiser(self.raw_step)
            theta = self.adapter.theta
            groups = [
                {"params": [theta], "lr": self.cfg.lr2, "weight_decay": self.cfg.weight_decay},
                {"params": [self.raw_step, *self.prior.parameters()], "lr": self.cfg.lr2 * 5, "weight_decay": 0.0},
            ]
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
        self.scheduler = self._make_scheduler(self.optimizer)
        self._opt_stage = stage

    def _make_scheduler(self, optimizer):
        """The 'cosine' schedule: transformers' linear warm-up then cosine decay to `min_lr_frac` of the
        base rates, over the whole fit. Each stage has its own optimiser, so its scheduler starts at the
        global step (`last_epoch`), which also makes a resumed fit take the same rates. None: constant."""
        if self.cfg.lr_schedule == "constant":
            return None
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        for g in optimizer.param_groups:
            g["initial_lr"] = g["lr"]  # the base rates (LambdaLR's name), needed to start at last_epoch >= 0
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=self.cfg.warmup_steps, num_training_steps=self.cfg.total_steps,
            min_lr_rate=self.cfg.min_lr_frac, last_epoch=self.step - 1)

    # -- one step -------------------------------------------------------------------------------
    def _timesteps(self, b: int) -> torch.Tensor:
        cfg = self.cfg
        if cfg.timesteps == "logit-normal":  # diffusers' SD3 training density
            from diffusers.training_utils import compute_density_for_timestep_sampling

            return compute_density_for_timestep_sampling("logit_normal", b, logit_mean=cfg.logit_mean,
                                                         logit_std=cfg.logit_std, generator=self.gen)
        if cfg.timesteps == "grid":
            return self._grid[torch.randint(len(self._grid), (b,), generator=self.gen)]
        t = torch.rand(b, generator=self.gen, dtype=torch.float32)
        if cfg.timesteps == "shifted":  # the flow shift's warp of a uniform variable (as the scheduler's sigmas)
            t = cfg.shift * t / (1.0 + (cfg.shift - 1.0) * t)
        return t

    def _draw(self):
        b = self.cfg.batch
        t = self._timesteps(b)
        if self.cfg.noise_mode == "random":
            eps = torch.randn((b, *self.x0.shape), generator=self.gen, dtype=torch.float32).to(self.device)
        elif self.cfg.noise_mode == "seed":
            eps = self.seed_noise.unsqueeze(0).expand(b, *self.x0.shape)
        else:
            fresh = torch.randn((b, *self.x0.shape), generator=self.gen, dtype=torch.float32).to(self.device)
            use_seed = (torch.rand(b, generator=self.gen) < self.cfg.seed_fraction).to(self.device)
            eps = torch.where(use_seed.view(-1, *([1] * self.x0.dim())), self.seed_noise.unsqueeze(0), fresh)
        u = None
        if self.stage == 2:
            u = torch.rand(self.cfg_theta_length, generator=self.gen, dtype=torch.float32) - 0.5
        return t.to(self.device), eps, u

    @property
    def cfg_theta_length(self) -> int:
        return self.adapter.config.theta_length

    def _rate_bits(self, u: torch.Tensor) -> torch.Tensor:
        theta = self.adapter.theta
        y = theta / F.softplus(self.raw_step) + u.to(theta.device)
        return self.prior.bits(y).mean()

    def train_step(self) -> FitProgress:
        self._ensure_optimizer()
        t0 = time.perf_counter()
        t, eps, u = self._draw()
        x0 = self.x0.unsqueeze(0).expand_as(eps)
        tt = t.view(-1, 1, 1, 1, 1)
        x_t = (1 - tt) * x0 + tt * eps
        target = eps - x0
        pred = self.adapter(hidden_states=x_t.to(self.dtype), timestep=t * 1000.0,
                            encoder_hidden_states=self.text_emb.expand(t.shape[0], -1, -1),
                            return_dict=False)[0].float()
        mse = F.mse_loss(pred, target)
        loss = mse
        if self.stage == 2:
            k = self.step - self.cfg.stage1_steps
            ramp = min(1.0, (k + 1) / max(1, self.cfg.ramp_steps))
            loss = mse + self.cfg.rate_lambda * ramp * self._rate_bits(u)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_sync is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.grad_sync(params)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        self.elapsed += time.perf_counter() - t0
        self.last = self._progress(float(loss.detach()), float(mse.detach()))
        return self.last

    def current_step_size(self) -> float:
        """The quantisation step a code written now would use: the learned step in stage 2; before it,
        the step stage 2 would start from (theta's spread), so an early stop still gives a real code."""
        if not self.step_initialised:
            return step_from_raw(raw_from_step(initial_step(self.adapter.theta)))
        return step_from_raw(self.raw_step.detach().cpu())

    def set_step_size(self, step: float) -> None:
        """Set the quantisation step (> 0) to `step` (stage 2 then learns on from it)."""
        with torch.no_grad():
            self.raw_step.fill_(raw_from_step(float(step)))
        self.step_initialised = True

    def symbols(self) -> np.ndarray:
        return quantise(self.adapter.theta, self.current_step_size())

    def _progress(self, loss: float, mse: float) -> FitProgress:
        from .entropy import ideal_bits

        q = self.symbols()
        bits = ideal_bits(q)
        return FitProgress(
            step=self.step, total=self.cfg.total_steps, stage=self.stage if not self.done else 2,
            loss=loss, mse=mse, bits_per_entry=bits / max(1, q.size), est_payload_bytes=int(math.ceil(bits / 8)),
            step_size=self.current_step_size(), elapsed=self.elapsed,
        )

    def run(self, *, callback: Callable[[FitProgress], None] | None = None, max_steps: int | None = None,
            max_seconds: float | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        """Fit until done, or until `max_steps` more steps / `max_seconds` / `should_stop()`.
        Returns True when the whole schedule is done."""
        start = time.perf_counter()
        n = 0
        while not self.done:
            if max_steps is not None and n >= max_steps:
                break
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                break
            if should_stop is not None and should_stop():
                break
            progress = self.train_step()
            n += 1
            if callback is not None:
                callback(progress)
        return self.done

    # -- state ----------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {
            "theta": self.adapter.theta.detach().cpu().clone(),
            "raw_step": self.raw_step.detach().cpu().clone().reshape(1),
            "rng": self.gen.get_state().clone(),
        }
        for name, p in self.prior.named_parameters():
            tensors[f"prior.{name}"] = p.detach().cpu().clone()
        opt_meta = None
        if self.optimizer is not None:
            sd = self.optimizer.state_dict()
            for idx, st in sd["state"].items():
                for key, val in st.items():
                    tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val).detach().cpu().clone().reshape(-1)
            opt_meta = [{k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])}
                        for g in sd["param_groups"]]
        meta = {
            "version": STATE_VERSION,
            "step": self.step,
            "elapsed": self.elapsed,
            "opt_stage": self._opt_stage if self.optimizer is not None else 0,
            "step_initialised": bool(self.step_initialised),
            "opt_groups": opt_meta,
            "config": dataclasses.asdict(self.cfg),
            "adapter": dataclasses.asdict(self.adapter.config),
            "data_digest": self.data_digest,
        }
        return tensors, meta

    def save(self, path, extra: dict | None = None) -> None:
        """Write the whole fit state to `path` (safetensors; metadata as JSON)."""
        from safetensors.torch import save_file

        tensors, meta = self.state_tensors()
        meta["extra"] = extra or {}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"lora_codec": json.dumps(meta)})

    @staticmethod
    def read_state(path) -> tuple[dict[str, torch.Tensor], dict]:
        """Read a state file (safetensors only: no pickle), checking its version."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("lora_codec", "null"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise LoraCodecError(f"not a lora_codec fit state: {path} ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(meta, dict) or meta.get("version") != STATE_VERSION:
            raise LoraCodecError(f"{path} is not a lora_codec fit state of version {STATE_VERSION}")
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a saved state into this fitter (built for the same clip, caption and settings)."""
        if meta.get("data_digest") != self.data_digest:
            raise LoraCodecError("the fit state was made for another clip, caption or geometry; it cannot resume this one")
        if meta.get("adapter") != json.loads(json.dumps(dataclasses.asdict(self.adapter.config))):
            raise LoraCodecError("the fit state was made with other adapter settings (rank, theta length, seed)")
        self.step = int(meta["step"])
        self.elapsed = float(meta.get("elapsed", 0.0))
        with torch.no_grad():
            self.raw_step.copy_(tensors["raw_step"].reshape(()))
            for name, p in self.prior.named_parameters():
                p.copy_(tensors[f"prior.{name}"])
        self.adapter.set_theta(tensors["theta"])
        self.gen.set_state(tensors["rng"])
        # states written before the spread rule: a state in stage 2 holds its learned step
        self.step_initialised = bool(meta.get("step_initialised", self.step > self.cfg.stage1_steps
                                              or self.cfg.init_raw_step is not None))
        self.optimizer = None
        if meta.get("opt_stage") and meta["opt_stage"] != self.stage:
            # saved exactly at the stage switch (optimiser of stage 1, next step in stage 2): the switch
            # builds stage 2's optimiser afresh, as an uninterrupted fit does
            pass
        elif meta.get("opt_stage"):
            # Rebuild the optimiser of the saved stage, then load its moments and step counts.
            self._ensure_optimizer()
            if self._opt_stage != meta["opt_stage"]:
                raise LoraCodecError("the fit state is inconsistent (optimiser stage)")
            sd = self.optimizer.state_dict()
            state = {}
            for key, val in tensors.items():
                if key.startswith("opt."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = val.reshape(() if name == "step" else -1)
            for idx, st in state.items():
                pshape = self._param_by_index(int(idx)).shape
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in st:
                        st[name] = st[name].reshape(pshape).to(self.device)
            groups = sd["param_groups"]
            for g, saved in zip(groups, meta["opt_groups"]):
                for k, v in saved.items():
                    if k != "params":
                        g[k] = v
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})

    def _param_by_index(self, idx: int) -> torch.Tensor:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return params[idx]
