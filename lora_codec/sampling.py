"""Sampling: the decoder's flow-matching ODE, with noise drawn on the CPU from the stored seed.

The schedule (sigmas with the flow shift) comes from diffusers' `FlowMatchEulerDiscreteScheduler`.
The loop is written here rather than taken from `WanPipeline.__call__` because the codec needs
three things the pipeline does not give: initial noise from a CPU generator (so any device
reproduces it), access to each step for the refinement track, and a velocity function that can be
the adapted model. Convention (diffusers / Wan): `x_sigma = (1 - sigma) x0 + sigma eps`, the model
predicts `v = eps - x0`, Euler step `x <- x + (sigma_next - sigma) v`, timestep fed as `1000 sigma`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

ProgressFn = Callable[[int, int], None]


def sigma_schedule(steps: int, shift: float) -> np.ndarray:
    """`steps + 1` sigmas from ~1 down to 0 (float64 numpy), as diffusers computes them."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if steps < 1:
        raise ValueError("steps must be >= 1")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(shift))
    scheduler.set_timesteps(num_inference_steps=int(steps), device="cpu")
    return scheduler.sigmas.to(torch.float64).numpy().copy()


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The decoder's starting noise: float32 normal from a CPU generator seeded by `seed` (mod 2**63)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) % (1 << 63))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


class Velocity:
    """v(x, sigma) from a (possibly adapted) Wan transformer, with optional classifier-free guidance.

    `model` is anything called like `WanTransformer3DModel` (the peft model is). Latents are float32;
    the model runs in its own dtype.
    """

    def __init__(self, model, text_emb: torch.Tensor, *, guidance: float = 1.0, uncond_emb: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.model = model
        self.text_emb = text_emb
        self.guidance = float(guidance)
        self.uncond_emb = uncond_emb
        self.dtype = dtype
        self.device = torch.device(device)
        if self.guidance != 1.0 and uncond_emb is None:
            raise ValueError("guidance != 1 needs the unconditional (empty caption) embedding")

    def _call(self, x: torch.Tensor, sigma: float, emb: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), float(sigma) * 1000.0, device=self.device, dtype=torch.float32)
        out = self.model(hidden_states=x.to(self.dtype), timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        return out.float()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x: [C, T, H, W] float32 on the device -> v, same shape."""
        xb = x.unsqueeze(0)
        v = self._call(xb, sigma, self.text_emb)
        if self.guidance != 1.0:
            v_u = self._call(xb, sigma, self.uncond_emb)
            v = v_u + self.guidance * (v - v_u)
        return v[0]


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of the flow ODE (the only arithmetic the plain decoder does between model calls;
    the refinement track's replay uses the same function for its ODE steps)."""
    return x + float(sigma_next - sigma) * v


@torch.no_grad()
def sample_ode(velocity: Velocity, noise: torch.Tensor, sigmas: np.ndarray, *, start: int = 0,
               progress: ProgressFn | None = None) -> torch.Tensor:
    """Euler integration of the flow ODE from `noise` (at sigmas[start]) to sigma = 0.

    `start > 0` continues a trajectory (e.g. after a replayed refinement-track prefix)."""
    x = noise.to(velocity.device, torch.float32)
    n = len(sigmas) - 1
    for i in range(start, n):
        v = velocity(x, sigmas[i])
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])
        if progress is not None:
            progress(i + 1, n)
    return x
