"""Fit efficiency on the `small` backbone: decoded quality and code bytes versus fit samples, per recipe.

    python benchmarks/bench_fit_efficiency.py run --recipes paper,default --clips all --seeds 0,1 \
        --out benchmarks/results/fit_efficiency.json
    python benchmarks/bench_fit_efficiency.py report benchmarks/results/fit_efficiency.json \
        --plot docs/fit_efficiency.png          # prints the summary (JSON) and the FIT.md tables

A *run* is one fit of one recipe on one clip with one seed. Along it, at the sample counts `--checkpoints`
(fit samples = steps x batch), the code of the fit's current state is written and decoded exactly as a
receiver would (`EncodeSession.measure` -> `codec.decode`: the code's own adapter, noise and schedule),
so one run gives a whole quality-versus-samples curve; the last point is the finished encode
(`EncodeSession.finish`). Mid-fit points are *anytime* codes: in stage 1 theta is quantised with the step
stage 2 would start from (`fit.initial_step`, for every recipe) and no rate term has acted yet, so they are
larger than finished codes; a recipe's final point at a budget is a complete fit at that budget.

Recipes are settings of the one fit loop (`backbones.FitDefaults`, `recipes.py`): `paper` and `default`
are the package's presets; the `v0-*` variants change one setting of `v0` (small's default before issue 13:
400 + 200 steps at batch 2 on the decoder's noise, constant lr 2e-2 / 1e-2) so each is one factor.
`--samples N` rescales a recipe's steps to N samples (`recipes.at_samples`: the stage split and the rate
ramp keep their proportions).

Results are written to `--out` after every run (runs already there are skipped, so a killed job resumes).
Clips: the three evaluation clips training never saw (examples/LICENSE.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILM_CAPTION = "a cartoon animation: a big grey rabbit in a green meadow with trees"
CLIPS = {
    "film": (ROOT / "examples" / "bigbuckbunny_eval.mp4", FILM_CAPTION),
    "film2": (ROOT / "examples" / "bigbuckbunny_eval2.mp4", FILM_CAPTION),
    "coffee": (ROOT / "examples" / "coffee_pan.mp4", "a photo of a cup of coffee on a saucer"),
}
CHECKPOINTS = (125, 250, 500, 1000, 2000, 4000, 6000, 8000, 10000)


def _v0(d):
    """small's default fit before issue 13 (docs/RESULTS.md measured it: 19.63 dB on the held-out film)."""
    return dataclasses.replace(d, stage1_steps=400, stage2_steps=200, lr1=2e-2, lr2=1e-2, batch=2, ramp_steps=40,
                               noise_mode="seed", seed_fraction=0.5, timesteps="uniform", lr_schedule="constant",
                               warmup_frac=0.0, min_lr_frac=0.1, init_scale=None, init_raw_step=None)


def _variant(**changes):
    def make(d):
        v = _v0(d)
        batch = changes.get("batch")
        if batch is not None:  # batch vs steps at equal samples
            samples = (v.stage1_steps + v.stage2_steps) * v.batch
            from lora_codec.recipes import at_samples

            v = at_samples(dataclasses.replace(v, batch=batch), samples)
        rest = {k: val for k, val in changes.items() if k not in ("batch", "stage2_frac", "ramp_frac", "lr_scale")}
        v = dataclasses.replace(v, **rest)
        if "lr_scale" in changes:
            v = dataclasses.replace(v, lr1=v.lr1 * changes["lr_scale"], lr2=v.lr2 * changes["lr_scale"])
        if "stage2_frac" in changes:
            total = v.stage1_steps + v.stage2_steps
            s2 = int(round(total * changes["stage2_frac"]))
            v = dataclasses.replace(v, stage1_steps=total - s2, stage2_steps=s2, ramp_steps=max(1, min(v.ramp_steps, s2)))
        if "ramp_frac" in changes:
            v = dataclasses.replace(v, ramp_steps=max(1, int(round(v.stage2_steps * changes["ramp_frac"]))))
        return v

    return make


def recipe_table() -> dict:
    from lora_codec.recipes import RECIPES

    table = {"paper": RECIPES["paper"], "default": RECIPES["default"], "v0": _v0}
    variants = {
        # noise
        "v0-random": dict(noise_mode="random"),
        "v0-mix": dict(noise_mode="mix", seed_fraction=0.5),
        # timestep sampling
        "v0-logitnormal": dict(timesteps="logit-normal"),
        "v0-shifted": dict(timesteps="shifted"),
        "v0-grid": dict(timesteps="grid"),
        # optimiser
        "v0-cosine": dict(lr_schedule="cosine", warmup_frac=0.05, min_lr_frac=0.1),
        "v0-lr0.5": dict(lr_scale=0.5),
        "v0-lr2": dict(lr_scale=2.0),
        "v0-init0.005": dict(init_scale=0.005),
        "v0-init0.08": dict(init_scale=0.08),
        # stage split, rate ramp, stage-2 step initialisation
        "v0-stage2-0.1": dict(stage2_frac=0.1),
        "v0-stage2-0.5": dict(stage2_frac=0.5),
        "v0-ramp0.5": dict(ramp_frac=0.5),
        "v0-step-ref": dict(init_raw_step=-2.0),
        # batch vs steps at equal samples
        "v0-batch1": dict(batch=1),
        "v0-batch4": dict(batch=4),
    }
    for name, ch in variants.items():
        table[name] = _variant(**ch)
    # combinations (named by what they add to v0)
    table["v0-grid-cosine"] = _variant(timesteps="grid", lr_schedule="cosine", warmup_frac=0.05, min_lr_frac=0.1)
    table["v0-shifted-cosine"] = _variant(timesteps="shifted", lr_schedule="cosine", warmup_frac=0.05, min_lr_frac=0.1)
    # adapter shape at equal bytes (run with --target-kb: rate control makes every code the same size):
    # theta's length (the number of stored values) and the rank of the factors the hashing fills
    for n in (2048, 8192):
        table[f"default-theta{n}"] = (lambda n: lambda d: dataclasses.replace(d, theta_length=n))(n)
    for r in (2, 4):
        table[f"default-rank{r}"] = (lambda r: lambda d: dataclasses.replace(d, rank=r))(r)
    # the paper's recipe at other constant learning rates (to choose small's paper_lr1 fairly)
    for lr in (2e-3, 6e-3, 2e-2):
        table[f"paper-lr{lr:g}"] = (lambda lr: lambda d: dataclasses.replace(
            RECIPES["paper"](d), lr1=lr, lr2=lr * 0.75))(lr)
    table["paper-lr2e-2-spreadstep"] = lambda d: dataclasses.replace(RECIPES["paper"](d), lr1=2e-2, lr2=1.5e-2,
                                                                         init_raw_step=None)
    return table


# ------------------------------------------------------------------------------------------------ run


def _load(path: Path) -> dict:
    if path and path.exists():
        return json.loads(path.read_text())
    return {"runs": [], "references": {}}


def _save(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def run_key(recipe: str, clip: str, seed: int, samples: int) -> str:
    return f"{recipe}|{clip}|{seed}|{samples}"


def one_run(bb, recipe_name: str, fit_defaults, clip: str, seed: int, checkpoints, target_kb=None) -> dict:
    """One fit with decoded checkpoints (see the module docstring)."""
    from lora_codec.codec import EncodeSession, EncodeSettings
    from lora_codec.adapter import step_from_raw
    from lora_codec.fit import initial_step, raw_from_step
    from lora_codec.recipes import samples as recipe_samples

    path, caption = CLIPS[clip]
    saved = bb.defaults
    bb.defaults = fit_defaults
    t0 = time.perf_counter()
    points = []
    try:
        settings = EncodeSettings(model=bb.name, caption=caption, seed=seed, target_kb=target_kb)
        with EncodeSession.start(path, settings) as session:
            cfg = session.fit_config
            total = recipe_samples(fit_defaults)
            for n in sorted(c for c in checkpoints if c < total):
                steps = int(math.ceil(n / cfg.batch))
                session.fit(max_steps=steps - session.fitter.step)
                if session.fitter.step <= cfg.stage1_steps:  # stage 1: the spread rule's step, for every recipe
                    data = session.code_bytes(step_from_raw(raw_from_step(initial_step(session.adapter.theta))))
                else:
                    data = session.code_bytes()
                q, _dec = session.measure(data)
                points.append({"samples": session.fitter.step * cfg.batch, "step": session.fitter.step,
                               "stage": 1 if session.fitter.step <= cfg.stage1_steps else 2, "bytes": len(data),
                               "psnr": q["decoded_psnr"], "fit_seconds": round(session.fitter.elapsed, 2)})
            session.fit()
            res = session.finish()
            points.append({"samples": session.fitter.step * cfg.batch, "step": session.fitter.step, "stage": 2,
                           "bytes": len(res.data), "psnr": res.report["decoded_psnr"], "final": True,
                           "fit_seconds": round(session.fitter.elapsed, 2)})
            config = dataclasses.asdict(cfg)
    finally:
        bb.defaults = saved
    return {"recipe": recipe_name, "clip": clip, "seed": seed, "samples": total, "config": config,
            "points": points, "seconds": round(time.perf_counter() - t0, 1)}


def references(bb, clip: str, seed: int) -> dict:
    """The VAE's ceiling and the unadapted model (all-zero adapter, same seed, caption and schedule)."""
    from lora_codec import bitstream
    from lora_codec.codec import EncodeSession, EncodeSettings, decode
    from lora_codec.metrics import psnr
    from lora_codec.video import tensor_to_video
    import numpy as np

    path, caption = CLIPS[clip]
    with EncodeSession.start(path, EncodeSettings(model=bb.name, caption=caption, seed=seed)) as session:
        code = session.make_code(np.zeros(session.adapter_config.theta_length, dtype=np.int32), 1.0)
        frames, latents = session.frames, session.latents
    plain = decode(bitstream.write_code(code), backbone=bb).frames
    return {"vae": round(float(psnr(frames, tensor_to_video(bb.decode_latents(latents)))), 3),
            "unadapted": round(float(psnr(frames, plain)), 3)}


def cmd_run(args) -> None:
    import torch

    from lora_codec.backbones import SMALL_NAME, load_backbone
    from lora_codec.recipes import at_samples

    torch.set_num_threads(args.threads)
    bb = load_backbone(SMALL_NAME)
    table = recipe_table()
    out = Path(args.out)
    doc = _load(out)
    doc.setdefault("meta", {}).update(threads=args.threads, torch=torch.__version__,
                                      command_last="python " + " ".join(sys.argv))
    done = {run_key(r["recipe"], r["clip"], r["seed"], r["samples"]) for r in doc["runs"]}
    clips = list(CLIPS) if args.clips == "all" else args.clips.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    checkpoints = [int(c) for c in args.checkpoints.split(",")] if args.checkpoints else CHECKPOINTS
    budgets = [int(s) for s in args.samples.split(",")] if args.samples else [None]
    for clip in clips:
        for seed in seeds:
            rkey = f"{clip}|{seed}"
            if rkey not in doc["references"] and not args.no_references:
                doc["references"][rkey] = references(bb, clip, seed)
                _save(out, doc)
            for name in args.recipes.split(","):
                for budget in budgets:
                    d = table[name](bb.defaults)
                    if budget is not None:
                        d = at_samples(d, budget)
                    from lora_codec.recipes import samples as recipe_samples

                    if args.rate_lambda is not None:
                        d = dataclasses.replace(d, rate_lambda=args.rate_lambda)
                    label = name if args.target_kb is None else f"{name}@{args.target_kb:g}kB"
                    label += "" if args.rate_lambda is None else f"@lambda{args.rate_lambda:g}"
                    key = run_key(label, clip, seed, recipe_samples(d))
                    if key in done:
                        continue
                    r = one_run(bb, label, d, clip, seed, checkpoints if not args.final_only else (),
                                target_kb=args.target_kb)
                    r["load_average"] = [round(x, 2) for x in os.getloadavg()]
                    doc["runs"].append(r)
                    done.add(key)
                    _save(out, doc)
                    last = r["points"][-1]
                    print(f"{name} {clip} seed {seed}: {r['samples']} samples -> {last['psnr']:.2f} dB, "
                          f"{last['bytes']} B ({r['seconds']:.0f} s); curve "
                          + " ".join(f"{p['samples']}:{p['psnr']:.2f}" for p in r["points"]), flush=True)


# --------------------------------------------------------------------------------------------- report


def _interp_samples(curve: list[tuple[int, float]], target: float) -> float | None:
    """Smallest sample count at which a (samples, psnr) curve reaches `target`, linear in log-samples
    between points; None if it never does; negative (-n) when the curve's first point, n, already reaches it
    (the true count is then at most n)."""
    prev = None
    for n, p in curve:
        if p >= target:
            if prev is None:
                return -float(n)
            if prev[1] >= target:
                return float(n)
            (n0, p0) = prev
            f = (target - p0) / (p - p0)
            return float(math.exp(math.log(n0) + f * (math.log(n) - math.log(n0))))
        prev = (n, p)
    return None


def summarise(doc: dict) -> dict:
    """Per recipe (complete runs on every clip x seed the paper recipe ran on): mean decoded PSNR and bytes at
    each checkpoint, final points by budget, and the samples needed to reach the paper's final mean PSNR."""
    from collections import defaultdict

    runs = doc["runs"]
    paper = [r for r in runs if r["recipe"] == "paper"]
    cells = sorted({(r["clip"], r["seed"]) for r in paper})
    out: dict = {"cells": [f"{c}|{s}" for c, s in cells], "recipes": {}}
    if not cells:
        return out
    paper_final = sum(r["points"][-1]["psnr"] for r in paper) / len(paper)
    out["paper_final_psnr"] = round(paper_final, 3)
    out["paper_samples"] = paper[0]["samples"]
    by_recipe = defaultdict(list)
    for r in runs:
        if (r["clip"], r["seed"]) in cells:
            by_recipe[r["recipe"]].append(r)
    for name, rs in by_recipe.items():
        # final points of complete fits, by budget (only budgets run on every cell)
        finals = defaultdict(dict)
        for r in rs:
            finals[r["samples"]][(r["clip"], r["seed"])] = r["points"][-1]
        final_rows = []
        for n in sorted(finals):
            if len(finals[n]) == len(cells):
                pts = list(finals[n].values())
                final_rows.append({"samples": n, "psnr": round(sum(p["psnr"] for p in pts) / len(pts), 3),
                                   "bytes": round(sum(p["bytes"] for p in pts) / len(pts)),
                                   "psnr_per_cell": {f"{c}|{s}": finals[n][(c, s)]["psnr"] for c, s in cells}})
        # anytime curve of the longest complete budget
        anytime = []
        if final_rows:
            longest = final_rows[-1]["samples"]
            longest_runs = [r for r in rs if r["samples"] == longest]
            grid = sorted({_bucket(p["samples"]) for p in longest_runs[0]["points"]})
            for n in grid:
                vals = [p for r in longest_runs for p in r["points"] if _bucket(p["samples"]) == n]
                if len(vals) == len(cells):
                    anytime.append({"samples": n, "psnr": round(sum(p["psnr"] for p in vals) / len(vals), 3),
                                    "bytes": round(sum(p["bytes"] for p in vals) / len(vals))})
        reach_final = _interp_samples([(f["samples"], f["psnr"]) for f in final_rows], paper_final)
        # per cell, against that cell's own paper final: the worst cell
        paper_cell = {(r["clip"], r["seed"]): r["points"][-1]["psnr"] for r in paper}
        per_cell = {}
        for c, sd in cells:
            curve = [(f["samples"], f["psnr_per_cell"][f"{c}|{sd}"]) for f in final_rows]
            v = _interp_samples(curve, paper_cell[(c, sd)])
            per_cell[f"{c}|{sd}"] = None if v is None else (f"<={round(-v)}" if v < 0 else round(v))
        worst = None
        if final_rows and all(v is not None for v in per_cell.values()):
            top = max(per_cell.values(), key=lambda v: int(str(v).lstrip("<=")))
            worst = top if isinstance(top, str) else int(top)
        reach_any = _interp_samples([(a["samples"], a["psnr"]) for a in anytime], paper_final)
        # a first point that already reaches it is an upper bound: "at most n" (stored as "<=n")
        fmt = lambda v: None if v is None else (f"<={round(-v)}" if v < 0 else round(v))  # noqa: E731
        out["recipes"][name] = {
            "finals": final_rows, "anytime": anytime,
            "samples_to_paper_final_complete_fits": fmt(reach_final),
            "samples_to_paper_final_anytime": fmt(reach_any),
            "samples_to_paper_final_per_cell": per_cell,
            "samples_to_paper_final_worst_cell": worst,
            "ratio_to_paper": None if reach_final is None else
            (f"<={abs(reach_final) / out['paper_samples']:.4f}" if reach_final < 0 else
             round(reach_final / out["paper_samples"], 4)),
        }
    return out


DESCRIPTIONS = {
    "paper": "the published recipe (recipes.paper): random noise, t ~ U(0,1), constant lr, batch 4, 2000 + 500 steps",
    "default": "small's default recipe (backbones.SMALL_DEFAULTS)",
    "v0": "small's default before issue 13: decoder's noise, t ~ U(0,1), constant lr 2e-2 / 1e-2, 400 + 200 steps x 2",
    "v0-random": "noise: fresh random noise (the paper's)",
    "v0-mix": "noise: decoder's noise for half the samples, random for the rest",
    "v0-logitnormal": "timesteps: logit-normal (0, 1) (Esser et al. 2024)",
    "v0-shifted": "timesteps: uniform warped by the decoder's shift 3 (the density of its sigma grid)",
    "v0-grid": "timesteps: the decoder's own 20 sigmas",
    "v0-cosine": "lr: 5 % warm-up, cosine decay to 0.1x",
    "v0-lr0.5": "lr x 0.5",
    "v0-lr2": "lr x 2",
    "v0-init0.005": "theta starts in +-0.005 (not +-0.02)",
    "v0-init0.08": "theta starts in +-0.08",
    "v0-stage2-0.1": "stage 2 = 10 % of the steps (not 1/3)",
    "v0-stage2-0.5": "stage 2 = 50 % of the steps",
    "v0-ramp0.5": "rate weight ramped over half of stage 2 (not 40 steps)",
    "v0-step-ref": "stage 2 starts from the reference step softplus(-2) (not theta's spread)",
    "v0-batch1": "batch 1 x 1200 steps (equal samples)",
    "v0-batch4": "batch 4 x 300 steps (equal samples)",
    "v0-grid-cosine": "grid timesteps + cosine lr",
    "v0-shifted-cosine": "shifted timesteps + cosine lr",
    "paper-lr0.002": "the paper recipe at its published lr 2e-3 (= `paper`)",
    "paper-lr0.006": "the paper recipe at lr 6e-3",
    "default-theta2048": "theta length 2,048 (not 4,096)",
    "default-theta8192": "theta length 8,192",
    "default-rank2": "rank 2 (not 1)",
    "default-rank4": "rank 4",
}


def _bucket(n: int) -> int:
    """The requested checkpoint a point belongs to (a batch of 4 lands at 252 for 250)."""
    near = min(CHECKPOINTS, key=lambda c: abs(c - n))
    return near if abs(near - n) <= 0.03 * near else n


def screen_table(doc: dict) -> str:
    """Markdown: every run of a one-cell screen (one clip, one seed), anytime points and the final point."""
    grid = sorted({_bucket(p["samples"]) for r in doc["runs"] for p in r["points"] if not p.get("final")})
    head = ["recipe", "what it changes", "samples"] + [f"dB at {n} (anytime)" for n in grid] + ["final dB", "final bytes"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["runs"]:
        at = {_bucket(p["samples"]): p["psnr"] for p in r["points"] if not p.get("final")}
        last = r["points"][-1]
        rows.append("| " + " | ".join([f"`{r['recipe']}`", DESCRIPTIONS.get(r["recipe"], ""), str(r["samples"])]
                                      + [f"{at[n]:.2f}" if n in at else "" for n in grid]
                                      + [f"{last['psnr']:.2f}", str(last["bytes"])]) + " |")
    return "\n".join(rows)


def grid_table(summary: dict, columns=(60, 125, 250, 500, 1000, 1200, 10000)) -> str:
    """Markdown: per recipe, samples to reach the paper recipe's final PSNR, and mean PSNR / bytes at equal
    samples (a complete fit at that budget where one was run, else *the anytime code* along the longest fit)."""
    head = ["recipe", "samples to reach the paper's final PSNR (mean of the cells)", "ratio to the paper's samples",
            "worst cell (vs its own paper final)"] + [f"dB / bytes at {n}" for n in columns]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    show = lambda v: "-" if v is None else str(v).replace("<=", "&le; ")  # noqa: E731
    for name, s in sorted(summary["recipes"].items(), key=lambda kv: (kv[0] != "paper", kv[0] != "default", kv[0])):
        if not s["finals"]:
            continue  # not run on every clip x seed cell
        reach, ratio, worst = (s["samples_to_paper_final_complete_fits"], s["ratio_to_paper"],
                               s["samples_to_paper_final_worst_cell"])
        if name == "paper":  # its own final: all of its samples, by definition
            reach, ratio, worst = summary["paper_samples"], 1.0, summary["paper_samples"]
        cells = []
        for n in columns:
            f = [x for x in s["finals"] if _bucket(x["samples"]) == n]
            a = [x for x in s["anytime"] if _bucket(x["samples"]) == n]
            cells.append(f"**{f[0]['psnr']:.2f}** / {f[0]['bytes']}" if f else
                         f"*{a[0]['psnr']:.2f}* / *{a[0]['bytes']}*" if a else "")
        rows.append("| " + " | ".join([f"`{name}`", show(reach),
                                       show(f"{ratio:.4f}" if isinstance(ratio, float) else ratio), show(worst)]
                                      + cells) + " |")
    return "\n".join(rows)


def cell_table(summary: dict, doc: dict) -> str:
    """Markdown: complete-fit PSNR per clip x seed cell (rows: recipe @ samples), and the references."""
    cells = summary["cells"]
    head = ["recipe @ samples"] + [f"`{c}`" for c in cells] + ["mean"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in sorted(summary["recipes"].items(), key=lambda kv: (kv[0] != "paper", kv[0] != "default", kv[0])):
        for f in s["finals"]:
            vals = [f["psnr_per_cell"][c] for c in cells]
            rows.append("| " + " | ".join([f"`{name}` @ {f['samples']}"] + [f"{v:.2f}" for v in vals]
                                          + [f"{f['psnr']:.2f}"]) + " |")
    refs = doc.get("references", {})
    for key, label in (("vae", "the VAE's ceiling"), ("unadapted", "unadapted model (same seed)")):
        if all(c in refs for c in cells):
            vals = [refs[c][key] for c in cells]
            rows.append("| " + " | ".join([label] + [f"{v:.2f}" for v in vals] + [f"{sum(vals) / len(vals):.2f}"]) + " |")
    return "\n".join(rows)


def merged(paths) -> dict:
    """Several result files as one (runs concatenated; the first file's entry wins for a repeated run)."""
    doc: dict = {"runs": [], "references": {}, "sources": [str(p) for p in paths]}
    seen = set()
    for p in paths:
        d = _load(Path(p))
        for r in d["runs"]:
            key = run_key(r["recipe"], r["clip"], r["seed"], r["samples"])
            if key not in seen:
                seen.add(key)
                doc["runs"].append(r)
        for k, v in d.get("references", {}).items():
            doc["references"].setdefault(k, v)
    return doc


def cells_table(doc: dict) -> str:
    """Markdown: final decoded PSNR / bytes of each recipe on each clip x seed it ran on, and the mean
    (e.g. the runs at one `--target-kb`, where rate control makes every code about the same size)."""
    from collections import defaultdict

    cells = sorted({(r["clip"], r["seed"]) for r in doc["runs"]})
    by = defaultdict(dict)
    for r in doc["runs"]:
        by[r["recipe"]][(r["clip"], r["seed"])] = r["points"][-1]
    head = ["recipe", "what it changes"] + [f"`{c}\\|{s}` dB / bytes" for c, s in cells] + ["mean dB / bytes"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, got in by.items():
        base = name.split("@", 1)[0]
        vals = [got.get(c) for c in cells]
        have = [v for v in vals if v is not None]
        mean = (f"{sum(v['psnr'] for v in have) / len(have):.2f} / {round(sum(v['bytes'] for v in have) / len(have))}"
                if len(have) == len(cells) else "")
        rows.append("| " + " | ".join([f"`{name}`", DESCRIPTIONS.get(base, "")]
                                      + [f"{v['psnr']:.2f} / {v['bytes']}" if v else "" for v in vals] + [mean]) + " |")
    return "\n".join(rows)


def cmd_report(args) -> None:
    doc = merged(args.results)
    if args.cells:
        doc["runs"] = [r for r in doc["runs"] if r["recipe"] not in (args.hide or [])]
        print(cells_table(doc))
        return
    if args.screen:
        doc["runs"] = [r for r in doc["runs"] if r["recipe"] not in (args.hide or [])]
        print(screen_table(doc))
        return
    summary = summarise(doc)
    for name in args.hide or []:
        summary["recipes"].pop(name, None)
    print(json.dumps(summary, indent=1))
    print()
    print(grid_table(summary))
    print()
    print(cell_table(summary, doc))
    if args.plot:
        plot(doc, summary, Path(args.plot))


def plot(doc: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 6.6), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    for name, s in sorted(summary["recipes"].items()):
        if not s["finals"]:
            continue
        colour = None
        if s["anytime"] and len(s["anytime"]) > 1:
            xs = [a["samples"] for a in s["anytime"]]
            line, = ax.plot(xs, [a["psnr"] for a in s["anytime"]], marker=".", alpha=0.7, linewidth=1,
                            label=f"{name}: along one fit (anytime codes)")
            colour = line.get_color()
            bx.plot(xs, [a["bytes"] for a in s["anytime"]], marker=".", alpha=0.7, linewidth=1, color=colour)
        fx = [f["samples"] for f in s["finals"]]
        ax.plot(fx, [f["psnr"] for f in s["finals"]], marker="o", markersize=7, linestyle="--", color=colour,
                label=f"{name}: complete fits")
        bx.plot(fx, [f["bytes"] for f in s["finals"]], marker="o", markersize=7, linestyle="--", color=colour,
                label=name)
    if "paper_final_psnr" in summary:
        ax.axhline(summary["paper_final_psnr"], color="grey", linestyle=":", label="paper recipe, final")
        ax.axvline(summary["paper_samples"] / 10, color="grey", linestyle="-.", linewidth=0.8, label="1/10 of its samples")
    refs = [v for k, v in doc.get("references", {}).items() if k in summary["cells"]]
    if refs:
        ax.axhline(sum(r["vae"] for r in refs) / len(refs), color="black", linewidth=0.8, label="VAE ceiling")
        ax.axhline(sum(r["unadapted"] for r in refs) / len(refs), color="black", linestyle="--", linewidth=0.8,
                   label="unadapted model")
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_xlabel("fit samples (steps x batch)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_ylabel(f"decoded PSNR (dB), mean of {len(summary['cells'])} clip x seed cells")
    ax.set_title("small: decoded quality (after quantisation, decoded as a receiver would)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    bx.set_ylabel("code bytes (whole file), same mean")
    bx.set_title("code size (mid-fit codes: no rate term yet)", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def cmd_merge(args) -> None:
    """Merge result files into one; `--alias A=B` also files every run of recipe A as recipe B (same settings,
    checked), e.g. the candidate that became the default."""
    doc = merged(args.inputs)
    table = recipe_table()
    from lora_codec.backbones import SMALL_DEFAULTS

    for alias in args.alias or []:
        src, dst = alias.split("=", 1)
        if table[src](SMALL_DEFAULTS) != table[dst](SMALL_DEFAULTS):
            raise SystemExit(f"--alias {alias}: the two recipes have different settings")
        have = {run_key(r["recipe"], r["clip"], r["seed"], r["samples"]) for r in doc["runs"]}
        for r in list(doc["runs"]):
            if r["recipe"] == src and run_key(dst, r["clip"], r["seed"], r["samples"]) not in have:
                doc["runs"].append(dict(r, recipe=dst, note=f"the {src} run (the same settings as {dst})"))
    doc.pop("sources", None)
    doc["merged_from"] = [str(p) for p in args.inputs]
    _save(Path(args.out), doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--recipes", default="paper,default")
    r.add_argument("--clips", default="all", help="all, or a comma list of " + ", ".join(CLIPS))
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--samples", default=None, help="comma list of sample budgets (default: each recipe's own)")
    r.add_argument("--checkpoints", default=None, help="comma list of sample counts to decode at along each fit")
    r.add_argument("--final-only", action="store_true", help="no mid-fit checkpoints")
    r.add_argument("--rate-lambda", type=float, default=None,
                   help="another rate weight (the run is labelled RECIPE@lambdaL)")
    r.add_argument("--target-kb", type=float, default=None,
                   help="rate control of the final code to this size (the run is labelled RECIPE@SIZEkB)")
    r.add_argument("--no-references", action="store_true")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine two threads per process thrash)")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+", help="result files of `run` (merged)")
    p.add_argument("--plot", default=None)
    p.add_argument("--screen", action="store_true", help="a one-cell screen: print its table only")
    p.add_argument("--cells", action="store_true", help="final dB / bytes per recipe and cell: print that table only")
    p.add_argument("--hide", action="append", metavar="RECIPE", help="leave a recipe out of the table and plot")
    p.set_defaults(func=cmd_report)
    m = sub.add_parser("merge")
    m.add_argument("out")
    m.add_argument("inputs", nargs="+")
    m.add_argument("--alias", action="append", metavar="FROM=TO")
    m.set_defaults(func=cmd_merge)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
