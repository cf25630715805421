"""The adapter: peft's UniLoRA on the backbone transformer, and theta <-> quantised symbols.

Every LoRA entry of every target layer reads one shared vector `theta` (length d) through a
balanced, seeded index assignment (peft `UniLoraConfig`, METHOD.md section 1). Only theta is
transmitted; the indices are rebuilt from (model, targets, r, d, proj_seed).

Quantisation (METHOD.md section 2, stage 2): step `s = softplus(raw_s)`, symbols `q = round(theta / s)`,
the decoder uses `theta_hat = q * s` computed in float32 on the CPU, so encoder and decoder hold the
same adapter bit for bit. During the fit, straight-through rounding is applied to the shared vector
with `torch.nn.utils.parametrize`, so every peft layer (and a recomputation under gradient
checkpointing) reads the quantised vector while gradients reach the continuous one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from .backbones import DEFAULT_TARGETS
from .errors import LimitError, LoraCodecError

ADAPTER_NAME = "default"
INIT_BOUND = 0.02  # theta starts uniform in +-0.02 (METHOD.md)
# Codec limits, checked before anything is allocated (a code from a stranger can ask for more).
MAX_RANK = 16
MAX_THETA_LENGTH = 1 << 21


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """What determines the adapter's structure (and so must travel in the code).

    Args:
        targets: module-name suffixes that get a UniLoRA layer (default: q, k, v, out of attn1/attn2).
        rank: LoRA rank r.
        theta_length: length d of the shared vector.
        proj_seed: seed of the index assignment.
    """

    targets: tuple[str, ...] = DEFAULT_TARGETS
    rank: int = 1
    theta_length: int = 131072
    proj_seed: int = 0

    def peft_config(self):
        from peft import UniLoraConfig

        return UniLoraConfig(
            r=self.rank,
            theta_d_length=self.theta_length,
            proj_seed=self.proj_seed,
            target_modules=list(self.targets),
            init_theta_d_bound=INIT_BOUND,
        )


class StraightThroughQuantiser(torch.nn.Module):
    """theta -> round(theta / s) * s with an identity gradient through the rounding (s learned)."""

    def __init__(self, raw_step: torch.nn.Parameter):
        super().__init__()
        self.raw_step = raw_step

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        step = F.softplus(self.raw_step)
        y = theta / step
        return (y + (torch.round(y) - y).detach()) * step


class Adapter:
    """A UniLoRA adapter attached to a backbone transformer (peft `get_peft_model`).

    The peft model wraps the backbone's transformer in place; `detach()` restores it.
    """

    def __init__(self, transformer: torch.nn.Module, config: AdapterConfig, *, init_seed: int | None = None):
        from peft import get_peft_model
        from peft.tuners.unilora.layer import UniLoraLayer

        if not 1 <= config.rank <= MAX_RANK:
            raise LimitError(f"adapter rank {config.rank} is outside 1..{MAX_RANK}")
        if not 1 <= config.theta_length <= MAX_THETA_LENGTH:
            raise LimitError(f"theta length {config.theta_length} is outside 1..{MAX_THETA_LENGTH}")
        self.config = config
        # peft draws theta's initial values from torch's global RNG: seed it for reproducible fits.
        state = torch.random.get_rng_state()
        if init_seed is not None:
            torch.manual_seed(init_seed)
        try:
            self.model = get_peft_model(transformer, config.peft_config())
        finally:
            torch.random.set_rng_state(state)
        self.layers = [m for m in self.model.modules() if isinstance(m, UniLoraLayer)]
        if not self.layers:
            raise LoraCodecError(f"no layer of the backbone matches the adapter targets {list(config.targets)}")
        self._quantiser: StraightThroughQuantiser | None = None

    # -- structure ----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def lora_entries(self) -> int:
        return sum(
            layer.unilora_indices_A[ADAPTER_NAME].numel() + layer.unilora_indices_B[ADAPTER_NAME].numel()
            for layer in self.layers
        )

    @property
    def _theta_dict(self):
        return self.model.base_model.unilora_theta_d

    @property
    def theta(self) -> torch.nn.Parameter:
        """The continuous shared vector (the leaf parameter, under any quantiser)."""
        d = self._theta_dict
        if parametrize.is_parametrized(d, ADAPTER_NAME):
            return d.parametrizations[ADAPTER_NAME].original
        return d[ADAPTER_NAME]

    @torch.no_grad()
    def set_theta(self, values: torch.Tensor) -> None:
        if values.shape != (self.config.theta_length,):
            raise LoraCodecError(f"theta has {tuple(values.shape)} entries, the adapter needs {self.config.theta_length}")
        self.theta.copy_(values.to(self.theta.device, self.theta.dtype))

    # -- fitting-time quantisation ------------------------------------------------------------
    def enable_quantiser(self, raw_step: torch.nn.Parameter) -> None:
        """Route every layer's reads of theta through straight-through rounding with step softplus(raw_step)."""
        if self._quantiser is None:
            self._quantiser = StraightThroughQuantiser(raw_step)
            parametrize.register_parametrization(self._theta_dict, ADAPTER_NAME, self._quantiser, unsafe=True)

    def disable_quantiser(self) -> None:
        if self._quantiser is not None:
            parametrize.remove_parametrizations(self._theta_dict, ADAPTER_NAME, leave_parametrized=False)
            self._quantiser = None

    def detach(self):
        """Remove the adapter and give back the plain transformer."""
        self.disable_quantiser()
        return self.model.unload()

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


# -- theta <-> symbols (the decoder's exact arithmetic) ------------------------------------------


def step_from_raw(raw_step: float | torch.Tensor) -> float:
    """The quantisation step as it is stored: float32 of softplus(raw_step)."""
    value = F.softplus(torch.as_tensor(raw_step, dtype=torch.float32)).item()
    return float(np.float32(value))


def quantise(theta: torch.Tensor, step: float) -> np.ndarray:
    """Symbols q = round(theta / s) as int32 (float32 arithmetic on the CPU)."""
    s = np.float32(step)
    t = theta.detach().to("cpu", torch.float32).numpy()
    q = np.rint(t / s)
    limit = (1 << 30)
    if not np.all(np.abs(q) < limit):
        raise LoraCodecError("theta / step is out of range for symbols; the quantisation step is too small")
    return q.astype(np.int32)


def dequantise(symbols: np.ndarray, step: float) -> torch.Tensor:
    """theta_hat = q * s in float32 on the CPU: identical on every machine."""
    q = np.asarray(symbols, dtype=np.int32).astype(np.float32)
    return torch.from_numpy(q * np.float32(step))
