"""Named fit recipes: complete sets of fit settings (`backbones.FitDefaults`) a user picks by name.

A recipe is a value of the same settings every fit reads (noise mode, timestep sampling, learning-rate
schedule, theta's initial scale, stage split, rate-weight ramp, stage-2 step initialisation, batch and
steps), never a separate code path: `fit.Fitter` runs them all.

* ``default`` - the backbone's own defaults (`backbones.SMALL_DEFAULTS`, `WAN_DEFAULTS`, ...), which
  docs/FIT.md derives from measurements on `small`.
* ``paper`` - the published recipe (METHOD.md section 2): 2,000 stage-1 steps at batch 4 plus 500
  stage-2 steps (the stage-2 length is not published; 500 matches the 500-step rate ramp), fresh
  random noise, t ~ U(0, 1), constant learning rate (stage 2 at 3/4 of stage 1's, 2e-3 -> 1.5e-3 in the
  paper), theta uniform in +-0.02, the reference code's first quantisation step softplus(-2) and the
  rate weight ramped over 500 steps: 10,000 fit samples. The learning rate is the backbone's
  `paper_lr1` (the published 2e-3 for Wan; on another backbone the best constant rate for this recipe
  measured there, docs/FIT.md).

`python -m lora_codec encode --recipe paper ...` selects one; explicit options (--steps, --batch,
--noise-mode, ...) still override single settings of it.
"""

from __future__ import annotations

import dataclasses

from .backbones import FitDefaults
from .errors import LoraCodecError

# The reference code's first raw quantisation step (METHOD.md section 2: raw_s starts at -2).
PAPER_RAW_STEP = -2.0
PAPER_STAGE1_STEPS = 2000
PAPER_STAGE2_STEPS = 500
PAPER_BATCH = 4
PAPER_RAMP_STEPS = 500
PAPER_LR2_RATIO = 1.5e-3 / 2e-3


def paper(defaults: FitDefaults) -> FitDefaults:
    """The published recipe on a backbone whose own defaults are `defaults` (adapter size, rate
    weight and sampler settings are kept: they are not part of the fit recipe)."""
    return dataclasses.replace(
        defaults,
        stage1_steps=PAPER_STAGE1_STEPS,
        stage2_steps=PAPER_STAGE2_STEPS,
        batch=PAPER_BATCH,
        lr1=defaults.paper_lr1,
        lr2=defaults.paper_lr1 * PAPER_LR2_RATIO,
        ramp_steps=PAPER_RAMP_STEPS,
        noise_mode="random",
        timesteps="uniform",
        lr_schedule="constant",
        warmup_frac=0.0,
        init_scale=None,
        init_raw_step=PAPER_RAW_STEP,
    )


RECIPES = {
    "default": lambda d: dataclasses.replace(d),
    "paper": paper,
}
RECIPE_NAMES = tuple(RECIPES)


def apply_recipe(defaults: FitDefaults, name: str | None) -> FitDefaults:
    """The fit settings of recipe `name` ('default' / None, 'paper') on a backbone with `defaults`."""
    key = (name or "default").lower()
    if key not in RECIPES:
        raise LoraCodecError(f"unknown fit recipe '{name}'; choose one of: {', '.join(RECIPE_NAMES)}")
    return RECIPES[key](defaults)


def samples(defaults: FitDefaults) -> int:
    """Fit samples (timesteps x noises seen) of a recipe: all steps times the batch."""
    return (defaults.stage1_steps + defaults.stage2_steps) * defaults.batch


def at_samples(defaults: FitDefaults, n: int) -> FitDefaults:
    """The same recipe with its step counts rescaled to about `n` fit samples (steps x batch): the stage
    split and the rate ramp keep their proportions (warm-up is already a fraction of the fit)."""
    if n < 1:
        raise LoraCodecError("a fit needs at least one sample")
    total = max(2, int(round(n / defaults.batch)))
    old1, old2 = defaults.stage1_steps, defaults.stage2_steps
    stage2 = int(round(total * old2 / max(1, old1 + old2)))
    stage2 = min(max(stage2, 1 if old2 else 0), total - 1)
    ramp = max(1, int(round(defaults.ramp_steps * stage2 / old2))) if old2 else defaults.ramp_steps
    return dataclasses.replace(defaults, stage1_steps=total - stage2, stage2_steps=stage2, ramp_steps=ramp)
