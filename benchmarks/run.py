"""Run every benchmark and write one JSON file (and, optionally, docs/RESULTS.md from it).

    python benchmarks/run.py [--quick] [--out benchmarks/results/latest.json] [--results-md docs/RESULTS.md]
    python benchmarks/run.py --render benchmarks/results/latest.json --results-md docs/RESULTS.md
    python benchmarks/run.py --only wan_cpu --merge --results-md docs/RESULTS.md   # re-run some, keep the rest
    python benchmarks/run.py --gpu-check gpu_check.json --results-md docs/RESULTS.md

`--gpu-check FILE` folds the JSON that scripts/gpu_check.py printed on a CUDA machine into the results:
it is copied to benchmarks/results/gpu_check.json (which the web app's cost model reads instead of the
published-architecture estimate) and rendered as the "GPU check" section of RESULTS.md.

Benchmarks (each module's `run()`; a failing one is recorded with its error and the others still run):
entropy coding (bench_entropy), fit-step overhead of the adapter (bench_fit), decode time (bench_decode),
the refinement track (bench_refine), the tiny VAE's latent statistics (calibrate_tiny), `compare`:
the example clip encoded with the default backbone here, then compared with x264 / x265 / SVT-AV1 at the
code's size and around it (lora_codec.evaluation), and the trained `small` backbone's quality on its
evaluation clips (bench_small), `wan_cpu`: the real Wan path's CLI round trip on this CPU with
random full-size weights (bench_wan_cpu), and `long_clip`: clips longer than small's native length coded
as segments - bytes per second and the seams (bench_long_clip).


The JSON records the command, the date, the machine (CPU, cores, GPU, load average before and after:
timings are wall-clock and other jobs on the machine slow them down), the git commit, and the
backbone. Markdown is rendered from the JSON only, so every number in RESULTS.md comes from a run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

EXAMPLE = ROOT / "examples" / "bigbuckbunny_2s.mp4"
GPU_CHECK = BENCH / "results" / "gpu_check.json"
TINY_NOTE = ("the tiny backbone is a seeded random model with NO visual knowledge: its reconstructions are not "
             "meaningful, so quality numbers measured with it (PSNR, MS-SSIM of codes) test the plumbing only; "
             "sizes and timings are real")


def _git() -> dict:
    def out(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return None

    return {"commit": out("rev-parse", "HEAD"), "dirty": bool(out("status", "--porcelain"))}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def bench_compare(quick: bool) -> dict:
    """Encode the example clip, then `compare` it with the classic codecs (lora_codec.evaluation)."""
    from lora_codec.backbones import load_backbone
    from lora_codec.codec import EncodeSettings, encode
    from lora_codec.evaluation import compare

    bb = load_backbone("auto")
    steps = 40 if quick else 250
    t0 = time.perf_counter()
    res = encode(EXAMPLE, EncodeSettings(model=bb.name, fit_steps=steps if bb.is_tiny else None), backbone=bb)
    encode_s = time.perf_counter() - t0
    out = compare(EXAMPLE, [res.data], codecs=("x264", "x265", "av1"), curve=(2.0, 4.0) if quick else
                  (0.5, 2.0, 4.0, 8.0), backbone=bb, code_names=["adapter code"])
    out["clip"] = str(EXAMPLE.relative_to(ROOT))
    out["encode"] = {"fit_steps": res.report["steps"], "fit_seconds": res.report["fit_seconds"],
                     "encode_seconds": round(encode_s, 2), "code_bytes": len(res.data)}
    out["backbone"] = bb.name + (" (NO visual knowledge)" if bb.is_tiny else "")
    return out


BENCHMARKS = {
    "entropy": ("bench_entropy", lambda m, q: m.run(quick=q)),
    "fit": ("bench_fit", lambda m, q: m.run(repeats=3 if q else 10)),
    "decode": ("bench_decode", lambda m, q: m.run(repeats=2 if q else 3, fit_steps=20 if q else 40)),
    "refine": ("bench_refine", lambda m, q: m.run(quick=q, fit_steps=40 if q else 100)),
    "calibrate_tiny": ("calibrate_tiny", lambda m, q: m.run()),
    "compare": (None, lambda m, q: bench_compare(q)),
    "small": ("bench_small", lambda m, q: m.run(quick=q)),
    "wan_cpu": ("bench_wan_cpu", lambda m, q: m.run()),
    "long_clip": ("bench_long_clip", lambda m, q: m.run(quick=q)),
}


def run_all(quick: bool, only: list[str] | None = None) -> dict:
    from lora_codec.backbones import resolve_name

    started = _dt.datetime.now(_dt.timezone.utc)
    result = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]) if sys.argv else None,
        "date_utc": started.isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "git": _git(),
        "backbone": resolve_name("auto"),
        "note": TINY_NOTE,
        "benchmarks": {},
        "seconds": {},
    }
    for name, (module, call) in BENCHMARKS.items():
        if only and name not in only:
            continue
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(module) if module else None
            result["benchmarks"][name] = call(mod, quick)
        except Exception as exc:  # record and go on with the others
            result["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc(limit=6)}
        result["seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {result['seconds'][name]} s", file=sys.stderr, flush=True)
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return result


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


# -- markdown ------------------------------------------------------------------------------------


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:.4g}" if a >= 1e-3 and a < 1e6 else f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_cell(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return out


def _render(obj: dict, level: int) -> list[str]:
    """Scalars as a bullet list, lists of dicts as tables, nested dicts as sub-sections."""
    lines: list[str] = []
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list)) or
               (isinstance(v, list) and not any(isinstance(x, dict) for x in v))}
    for k, v in scalars.items():
        if k == "traceback":
            continue
        lines.append(f"- {k}: {_cell(v)}")
    if scalars:
        lines.append("")
    for k, v in obj.items():
        if k in scalars:
            continue
        lines.append(f"{'#' * level} {k}")
        lines.append("")
        if isinstance(v, dict):
            lines += _render(v, level + 1)
        else:
            lines += _table([x for x in v if isinstance(x, dict)])
            lines.append("")
    return lines


COMPARE_COLUMNS = ["name", "budget", "bytes", "kbps", "bpp", "crf", "fits", "psnr_rgb", "psnr_y", "ms_ssim", "lpips",
                   "dists", "seconds"]


def markdown(result: dict, json_path: str) -> str:
    m = result["machine"]
    lines = [
        "# Results",
        "",
        f"Latest numbers, rendered from `{json_path}` by `benchmarks/run.py` (nothing here is typed by hand).",
        "",
        f"- command: `{result['command']}`",
        f"- date (UTC): {result['date_utc']}" + (" (quick sizes)" if result.get("quick") else ""),
        f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, GPU: {m['gpu'] or 'none'}; "
        f"Python {m['python']}, torch {m['torch']}",
        f"- load average (1, 5, 15 min) before: {_cell(m.get('loadavg_1_5_15'))}; after: {_cell(m.get('loadavg_after'))}"
        " - timings are wall-clock; a load above the core count means other jobs shared the CPU and slowed them down",
        f"- git: {_cell(result['git'].get('commit'))}{' (uncommitted changes)' if result['git'].get('dirty') else ''}",
        f"- backbone: `{result['backbone']}`",
    ]
    if result.get("operator_note"):
        lines.append(f"- note on this run: {result['operator_note']}")
    lines += [""]
    if result["backbone"] == "tiny":
        lines += [f"**Backbone caveat:** {result['note']}.", "",
                  "Not measured in this run: anything with the real `wan2.1-t2v-1.3b` weights (they need a CUDA GPU "
                  "and the download; run `python benchmarks/run.py --results-md docs/RESULTS.md` there; the `wan_cpu` "
                  "section runs its code path with random full-size weights on this CPU, and the GPU check section "
                  "says what was measured on a GPU), and LPIPS / "
                  "DISTS (their network weights are not on this machine). Rate-distortion results of the method "
                  "on UVG / HEVC clips come from `python -m lora_codec batch` + `compare` on such a machine.", ""]
    lines += ["Seconds per benchmark: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()), ""]
    for name, res in result["benchmarks"].items():
        lines += [f"## {name}", ""]
        if "error" in res:
            lines += [f"FAILED: `{_cell(res['error'])}`", ""]
            continue
        if name == "small":
            lines += small_markdown(res)
            continue
        if name == "long_clip":
            lines += long_clip_markdown(res)
            continue
        if name == "compare":
            g = res["geometry"]
            lines += [f"`{res['clip']}` at the coded geometry {g['width']}x{g['height']}, {g['frames']} frames, "
                      f"{_cell(g['fps'])} fps; backbone {res['backbone']}; "
                      f"encode: {_cell(res['encode'])}. Sizes are whole files (code / mp4). "
                      "`fits` no: the codec's smallest file (worst CRF) is over the budget.", ""]
            lines += _table(res["rows"], COMPARE_COLUMNS)
            lines.append("")
            if res.get("perceptual_unavailable"):
                lines += [f"LPIPS / DISTS not reported: {res['perceptual_unavailable']}.", ""]
            for n in res.get("metric_notes", []) + res.get("notes", []):
                lines.append(f"- {n}")
            lines.append("")
            continue
        lines += _render(res, 3)
    gpu = None
    if GPU_CHECK.exists():
        try:
            gpu = json.loads(GPU_CHECK.read_text())
        except ValueError:
            gpu = None
    lines += gpu_markdown(gpu)
    return "\n".join(lines).rstrip() + "\n"


SMALL_ROWS = (("vae", "the VAE alone (encode + decode: the ceiling)"),
              ("unadapted", "the plain model, same seed and caption (no adapter)"),
              ("default", "default code, decoded as a receiver would"))


def _recipe_words(d: dict) -> str:
    """The fit recipe's settings beyond steps and batch (docs/FIT.md), in words; '' for results recorded
    before those settings existed."""
    if "timesteps" not in d:
        return ""
    lr = (f"a {d['lr_schedule']} learning rate with {d['warmup_frac']:.0%} warm-up to {d['min_lr_frac']:g}x"
          if d.get("lr_schedule") == "cosine" else "a constant learning rate")
    return f"; noise '{d['noise_mode']}', timesteps '{d['timesteps']}', {lr} (docs/FIT.md)"


def small_markdown(res: dict) -> list[str]:
    """The small backbone's quality section: one table per evaluation clip."""
    t = res["training"]
    run = res.get("run")
    lines = ([f"Run: `{run['command']}` on {run['date_utc']}, load average before {_cell(run.get('loadavg_before'))}, "
              f"after {_cell(run.get('loadavg_after'))}.", ""] if run else [])
    lines += [f"Backbone: {res['backbone']}. Trained by `{t['command']}` ({t['threads']} threads): VAE {t['vae_seconds']} s, "
             f"transformer {t['transformer_seconds']} s, {t['total_seconds']} s in all. Default fit: "
             f"{res['defaults']['stage1_steps']} + {res['defaults']['stage2_steps']} steps x batch "
             f"{res['defaults']['batch']}, rate weight {res['defaults']['rate_lambda']}, theta length "
             f"{res['defaults']['theta_length']}, {res['defaults']['sample_steps']} sampling steps"
             + _recipe_words(res["defaults"]) + ".", ""]
    for name, c in res["clips"].items():
        lines += [f"### {name}: `{c['clip']}`", "", "| what | bytes | PSNR (dB) | MS-SSIM |", "|---|---|---|---|"]
        for key, label in SMALL_ROWS:
            q = c[key]
            lines.append(f"| {label} | {q.get('bytes', '-')} | {q['psnr_rgb']} | {q['ms_ssim']} |")
        for p in c.get("rate_points", []):
            lines.append(f"| code at rate weight {p['rate_lambda']:g} | {p['bytes']} | {p['psnr_rgb']} | {p['ms_ssim']} |")
        for r in c.get("refine", []):
            lines.append(f"| fit on {r['noise_mode']} noise + refinement track (N = {r['n']}), track replayed | "
                         f"{r['bytes']} | {r['track']['psnr_rgb']} | {r['track']['ms_ssim']} |")
            lines.append(f"| the same code, plain ODE (track ignored) | {r['bytes']} | {r['plain_ode']['psnr_rgb']} | "
                         f"{r['plain_ode']['ms_ssim']} |")
        for row in c["classic"]:
            if row["budget"] is None:
                continue
            fits = "" if row["fits"] else " (cannot get this small: its smallest file)"
            lines.append(f"| {row['name']} at {row['budget']} bytes{fits} | {row['bytes']} | {_cell(row['psnr_rgb'])} | "
                         f"{_cell(row['ms_ssim'])} |")
        lines += ["", f"Default encode: {c['default']['fit_steps']} fit steps in {c['default']['encode_seconds']} s "
                  "(reading the clip, the fit, quantisation and entropy coding).", ""]
    return lines


def long_clip_markdown(res: dict) -> list[str]:
    """Long clips as segments (bench_long_clip): one row per clip and overlap, and the seams."""
    run = res.get("run")
    lines = ([f"Run: `{run['command']}` on {run['date_utc']}, load average before {_cell(run.get('loadavg_before'))}, "
              f"after {_cell(run.get('loadavg_after'))}.", ""] if run else [])
    lines += [f"Backbone **{res['backbone']}**, on the {res['device'].upper()} (native length {res['native_frames']} "
              f"frames; {res['fit_steps']} fit steps per segment{', the default fit' if res.get('default_fit', True) else ''}). A clip longer than the native "
              "length is coded as segments, a fit each, in one file (`lora_codec/segments.py`); `--overlap` is the "
              "least number of frames consecutive segments share (the starts are spread evenly, so some share more). "
              "*Seams*: PSNR over the frames on either side of each junction (where the set of segments covering "
              "a frame changes) vs the other frames, and the mean absolute frame-to-frame change (0-255) at the "
              "junctions vs inside the segments, the source's in brackets. *Blend* is what the decoder does "
              "(shared frames crossfaded); *hard cut* joins the same decoded segments without blending (each shared "
              "frame from the segment it is deeper in). Fit seconds are wall-clock on a shared machine.", "",
              "| clip | overlap | segments | frames | bytes | bytes/s | one segment alone: bytes/s | PSNR (dB) | "
              "MS-SSIM | seams, blend: PSNR junction / inside | change junction / inside (source) | seams, hard cut: "
              "PSNR junction | change junction | fit s per segment |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in res["clips"].items():
        one = c["one_segment"]
        for r in c["runs"]:
            b, h = r["blended"], r["hard_cut"]
            label = f"{name}: `{c['clip']}`"
            lines.append(
                f"| {label} | {r['overlap']} | {r['segments']} | {r['frames']} | {r['bytes']} | {r['bytes_per_second']} | "
                f"{one['bytes_per_second']} ({one['frames']} frames, {one['psnr_rgb']} dB) | {b['psnr_rgb']} | "
                f"{b['ms_ssim']} | {_cell(b['psnr_boundary'])} / {_cell(b['psnr_interior'])} | "
                f"{_cell(b['change_boundary'])} / {_cell(b['change_interior'])} ({_cell(b['source_change_boundary'])} / "
                f"{_cell(b['source_change_interior'])}) | {_cell(h['psnr_boundary'])} | {_cell(h['change_boundary'])} | "
                f"{', '.join(f'{x:.0f}' for x in r['fit_seconds_per_segment'])} |")
    lines.append("")
    return lines


GPU_FIT_COLUMNS = ["geometry", "batch", "tokens", "seconds_per_step", "seconds_per_sample", "peak_gpu_gb"]


def gpu_markdown(gpu: dict | None) -> list[str]:
    """The "GPU check" section: the JSON of scripts/gpu_check.py, or a line saying none was measured."""
    lines = ["## GPU check (Wan2.1-T2V-1.3B, random full-size weights)", ""]
    if not gpu:
        return lines + ["No GPU numbers have been measured yet: no GPU was available to this project so far. Run "
                        "`python scripts/gpu_check.py > gpu_check.json` on a CUDA machine, then "
                        "`python benchmarks/run.py --gpu-check gpu_check.json --results-md docs/RESULTS.md`. Until "
                        "then the app's GPU-time figures are the published-architecture estimate (METHOD.md "
                        "section 7).", ""]
    lines += [f"- `{gpu.get('script')}` on {gpu.get('device_name')} ({gpu.get('sm_count')} SMs, "
              f"{gpu.get('gpu_memory_gb')} GB), {gpu.get('date_utc')}; torch {gpu.get('torch')}, diffusers "
              f"{gpu.get('diffusers')}",
              f"- weights: {gpu.get('weights')}",
              f"- structural test: {'passed' if gpu.get('structural_test', {}).get('passed') else 'FAILED'} "
              f"({_cell(gpu.get('structural_test', {}).get('summary'))})", "",
              "### fit (seconds per optimiser step and per sample, gradient checkpointing)", ""]
    lines += _table([{k: r.get(k) for k in GPU_FIT_COLUMNS} for r in gpu.get("fit", [])], GPU_FIT_COLUMNS)
    lines.append("")
    for name in ("decode", "refine"):
        if gpu.get(name):
            lines += [f"### {name}", ""] + _render(gpu[name], 4)
    if gpu.get("errors"):
        lines += ["### errors", ""] + [f"- {k}: `{_cell(v)}`" for k, v in gpu["errors"].items()] + [""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", default=str(BENCH / "results" / "latest.json"), help="the JSON file to write")
    ap.add_argument("--results-md", default=None, help="also render the results as markdown to this file")
    ap.add_argument("--render", default=None, metavar="JSON", help="only render an existing JSON to --results-md")
    ap.add_argument("--merge", action="store_true",
                    help="with --only: keep the other benchmarks' results of the existing --out JSON (each merged "
                         "result records its own run date and load)")
    ap.add_argument("--add", default=None, metavar="NAME=JSON",
                    help="merge the JSON one benchmark script printed when run alone (e.g. "
                         "wan_cpu=out.json from benchmarks/bench_wan_cpu.py) into --out, as benchmark NAME")
    ap.add_argument("--gpu-check", default=None, metavar="JSON",
                    help="fold the JSON printed by scripts/gpu_check.py into the results (copied to "
                         "benchmarks/results/gpu_check.json, rendered in RESULTS.md)")
    ap.add_argument("--note", default=None,
                    help="a remark about the run kept in the JSON (e.g. other jobs sharing the machine); with "
                         "--render it is added to that JSON")
    args = ap.parse_args(argv)
    if args.gpu_check:
        gpu = json.loads(Path(args.gpu_check).read_text())
        if gpu.get("device_type") != "cuda":
            print("note: this GPU check did not run on CUDA (a dry run?): folded, but the app ignores it",
                  file=sys.stderr)
        GPU_CHECK.parent.mkdir(parents=True, exist_ok=True)
        if Path(args.gpu_check).resolve() != GPU_CHECK.resolve():
            GPU_CHECK.write_text(json.dumps(gpu, indent=1) + "\n")
        if not args.render and not args.only:
            args.render = args.out
    if args.add:
        name, _, file = args.add.partition("=")
        if name not in BENCHMARKS or not file:
            ap.error(f"--add NAME=JSON with NAME one of: {', '.join(BENCHMARKS)}")
        res = _clean(json.loads(Path(file).read_text()))
        mtime = _dt.datetime.fromtimestamp(Path(file).stat().st_mtime, _dt.timezone.utc)
        res.setdefault("run", {"date_utc": mtime.isoformat(timespec="seconds"),
                               "command": f"python benchmarks/{BENCHMARKS[name][0]}.py (run alone)",
                               "git": _git()})
        out = Path(args.out)
        result = json.loads(out.read_text())
        result["benchmarks"][name] = res
        result["seconds"][name] = res.get("roundtrip_seconds", res.get("seconds"))
        out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        args.render = args.render or args.out
    if args.render:
        path = Path(args.render)
        result = json.loads(path.read_text())
        if args.note:
            result["operator_note"] = args.note
            path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    else:
        only = [x.strip() for x in args.only.split(",")] if args.only else None
        unknown = sorted(set(only or []) - set(BENCHMARKS))
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
        result = _clean(run_all(args.quick, only))
        path = Path(args.out)
        if args.merge and path.exists():
            old = json.loads(path.read_text())
            for name, res in result["benchmarks"].items():
                res["run"] = {"date_utc": result["date_utc"], "command": result["command"],
                              "loadavg_before": result["machine"].get("loadavg_1_5_15"),
                              "loadavg_after": result["machine"].get("loadavg_after"), "git": result["git"]}
                old["benchmarks"][name] = res
                old["seconds"][name] = result["seconds"][name]
            result = old
        if args.note:
            result["operator_note"] = args.note
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    if args.results_md:
        try:
            rel = str(path.resolve().relative_to(ROOT))
        except ValueError:
            rel = str(path)
        Path(args.results_md).write_text(markdown(result, rel))
        print(f"wrote {args.results_md}", file=sys.stderr)
    failed = [k for k, v in result["benchmarks"].items() if "error" in v]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
