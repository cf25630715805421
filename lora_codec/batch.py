"""Batch encoding of many clips, on one or several processes / GPUs: `python -m lora_codec batch`.

    python -m lora_codec batch CLIPS_DIR -o OUT --model wan2.1-t2v-1.3b --steps 2000
    accelerate launch --multi_gpu --num_processes 4 -m lora_codec batch CLIPS_DIR -o OUT ...
    accelerate launch --multi_gpu --num_processes 2 -m lora_codec batch clip.mp4 -o OUT --data-parallel

Inputs: directories (searched recursively for video files), video files, and list files (one path
per line, relative to the list's folder; `PATH<TAB>CAPTION` gives that clip its own caption; blank
lines and `#` comments are skipped). Clips are sorted by a stable id (their path, '/' -> '__').

Outputs in OUT: `codes/ID.vov`, `results/ID.json` (one per clip, written atomically after its code),
`logs/rank-R-of-W.jsonl` (what each process did), and, written by rank 0 at the end after a barrier,
`results.json` + `results.csv` (bytes, kbps, bpp, metrics, fit and decode times, per clip).

Restartable: a clip whose code and result both exist is skipped (`--redo` re-encodes everything); a
result made with other settings stops the batch before any work. `--save-every N` also saves each
clip's fit state every N steps (`states/`); a restarted batch resumes from a saved state it finds.

Parallelism (rank and world from `accelerate.PartialState`, which also starts torch.distributed):
- default: clips are sharded across ranks, `i % world == rank` over the sorted list of clips still
  to do (computed by every rank before a barrier, so all agree); ranks never talk while encoding;
- `--data-parallel`: every rank fits the SAME clip, one after the other; each step's gradients are
  averaged over ranks with `torch.distributed.all_reduce` (what the reference does with DDP), each rank
  drawing its own timesteps and noise, so W ranks x batch B act as one batch of W*B. Rank 0 writes the
  code; all ranks check that they ended with the very same code.

On a machine without CUDA, `accelerate launch --cpu` starts several processes only through mpirun
(accelerate >= 0.28); use `accelerate launch --multi_gpu --num_processes N` (torchrun), and the
processes run on the CPU with gloo.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import LoraCodecError

__all__ = ["BatchError", "ClipItem", "collect_clips", "shard", "run_batch", "add_command"]

MAX_LIST_BYTES = 16 << 20
MAX_CLIPS = 100_000
CSV_FIELDS = ["id", "status", "clip", "bytes", "kbytes_per_second", "kbps", "bits_per_pixel", "frames", "height",
              "width", "fps", "segments", "psnr_rgb", "psnr_y", "ms_ssim", "lpips", "dists", "fit_steps", "fit_seconds",
              "encode_seconds", "decode_seconds", "fit_processes", "rank", "error"]
TINY_NOTE = ("backbone 'tiny' has no visual knowledge: its reconstructions are not meaningful; the quality "
             "numbers test the plumbing only")


class BatchError(LoraCodecError):
    """A batch cannot run (no clips, bad list file, an output folder made with other settings) or had failures."""


@dataclasses.dataclass(frozen=True)
class ClipItem:
    id: str
    path: str  # absolute
    caption: str | None = None  # from a list file; None = the batch's --caption


# -- inputs ------------------------------------------------------------------------------------


def _sanitize(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "clip"
    return s[:160]


def _read_list(path: Path) -> list[tuple[Path, str | None]]:
    try:
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise BatchError(f"{path}: list file is {size} bytes, over the limit of {MAX_LIST_BYTES}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BatchError(f"{path}: neither a video file ffmpeg can read nor a UTF-8 list of clips") from None
    except OSError as e:
        raise BatchError(f"{path}: cannot read ({e.strerror or e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, caption = line.partition("\t")
        p = Path(name.strip())
        if not p.is_absolute():
            p = path.parent / p
        if not p.is_file():
            raise BatchError(f"{path}, line {n}: no such file: {p}")
        out.append((p, caption.strip() if caption.strip() else None))
    return out


def _hidden(rel: Path) -> bool:
    """A dot file or a file in a dot folder (.git, .cache, ...): never a clip of the batch."""
    return any(part.startswith(".") for part in rel.parts)


def collect_clips(inputs: list[str | os.PathLike]) -> list[ClipItem]:
    """The batch's clips from directories, video files and list files, in a deterministic order.

    A file is a video when ffmpeg finds a decodable video stream in it (`video.is_video_file`: its
    content decides, not its extension, so .m2ts, raw .h264/.hevc streams and files without an
    extension are taken); a UTF-8 text file given as an argument is a list of clips."""
    from .video import is_video_file

    found: list[tuple[str, Path, str | None]] = []  # (id base, path, caption)
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            vids = sorted((f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p))
                           and is_video_file(f)), key=lambda f: f.relative_to(p).as_posix())
            if not vids:
                raise BatchError(f"{p}: no video files in this folder (no file there holds a video ffmpeg can read)")
            for f in vids:
                found.append((f.relative_to(p).with_suffix("").as_posix().replace("/", "__"), f, None))
        elif p.is_file():
            if is_video_file(p):
                found.append((p.stem, p, None))
            else:
                for f, caption in _read_list(p):
                    found.append((f.stem, f, caption))
        else:
            raise BatchError(f"no such file or folder: {p}")
        if len(found) > MAX_CLIPS:
            raise BatchError(f"more than {MAX_CLIPS} clips")
    if not found:
        raise BatchError("no clips to encode")
    # one entry per file (the first caption given wins); ids made unique with a hash of the path
    seen: dict[str, tuple[str, Path, str | None]] = {}
    for base, f, caption in found:
        key = str(f.resolve())
        if key not in seen:
            seen[key] = (_sanitize(base), f.resolve(), caption)
    counts: dict[str, int] = {}
    for base, _f, _c in seen.values():
        counts[base] = counts.get(base, 0) + 1
    items = []
    for key, (base, f, caption) in seen.items():
        cid = base if counts[base] == 1 else f"{base}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        items.append(ClipItem(id=cid, path=str(f), caption=caption))
    items.sort(key=lambda c: (c.id, c.path))
    return items


def shard(items: list, rank: int, world: int) -> list:
    """Rank `rank`'s share of `items`: every `world`-th item from position `rank`."""
    return [x for i, x in enumerate(items) if i % world == rank]


# -- files -------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _dumps(obj: Any, **kw) -> str:
    return json.dumps(_json_safe(obj), allow_nan=False, default=str, **kw)


@dataclasses.dataclass
class Layout:
    root: Path

    def code(self, cid: str) -> Path:
        return self.root / "codes" / f"{cid}.vov"

    def result(self, cid: str) -> Path:
        return self.root / "results" / f"{cid}.json"

    def state(self, cid: str, rank: int | None = None, world: int = 1) -> Path:
        suffix = "" if rank is None else f".rank-{rank}-of-{world}"
        return self.root / "states" / f"{cid}{suffix}.state"

    def log(self, rank: int, world: int) -> Path:
        return self.root / "logs" / f"rank-{rank}-of-{world}.jsonl"


def _read_result(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


# -- distributed -------------------------------------------------------------------------------


@dataclasses.dataclass
class Dist:
    rank: int
    world: int
    device: Any
    state: Any  # accelerate.PartialState or None

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()


def init_distributed(timeout_hours: float = 72.0) -> Dist:
    """Rank, world size and device from accelerate (which starts torch.distributed when launched
    with several processes): NCCL on CUDA, gloo on the CPU. The process-group timeout is long because
    ranks wait for each other at the final barrier, which can be hours away on unbalanced shards."""
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu, timeout=timedelta(hours=timeout_hours))
    return Dist(rank=int(state.process_index), world=int(state.num_processes), device=state.device, state=state)


def make_grad_sync(world: int):
    """grad_sync for `Fitter.set_distributed`: every .grad becomes its mean over ranks (one all_reduce
    over all trainable tensors, flattened)."""
    import torch
    import torch.distributed as dist

    def grad_sync(params: list) -> None:
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        off = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[off:off + n].view_as(g))
            off += n

    return grad_sync


def _all_agree(data: bytes, device) -> bool:
    """True when every rank holds the same bytes (SHA-256 compared with MIN/MAX all_reduce)."""
    import torch
    import torch.distributed as dist

    digest = torch.tensor(list(hashlib.sha256(data).digest()), dtype=torch.int64, device=device)
    lo, hi = digest.clone(), digest.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


def _same_step(state_path: Path, device) -> bool:
    """Whether every rank's saved fit state is readable and at the same step."""
    import torch
    import torch.distributed as dist

    from .segments import state_step

    step = state_step(state_path)  # a one-segment fit state, or a long clip's segmented one
    lo = torch.tensor([step], dtype=torch.int64, device=device)
    hi = lo.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return int(lo.item()) == int(hi.item()) >= 0


def _all_true(flag: bool, device) -> bool:
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# -- the batch -----------------------------------------------------------------------------------


@dataclasses.dataclass
class BatchOptions:
    metrics: bool = True
    perceptual: bool = True
    decode_steps: int | None = None
    data_parallel: bool = False
    save_every: int = 0
    redo: bool = False
    quiet: bool = False
    segment_settings: Any = None  # segments.SegmentSettings (None: the defaults)


def _settings_key(settings, fit_processes: int, segment_settings=None) -> dict:
    from .segments import SegmentSettings

    d = dataclasses.asdict(settings)
    d.pop("measure", None)  # whether the encoder decodes its code to report quality: not part of the code
    d["fit_processes"] = fit_processes
    if segment_settings is not None and segment_settings != SegmentSettings():  # keys of older results stay valid
        d["segment_settings"] = dataclasses.asdict(segment_settings)
    return json.loads(json.dumps(d, default=str))  # as JSON would give it back


def _clip_settings(base, item: ClipItem):
    return dataclasses.replace(base, caption=item.caption if item.caption is not None else (base.caption or ""))


def plan(items: list[ClipItem], layout: Layout, settings, fit_processes: int, redo: bool,
         segment_settings=None) -> tuple[list[ClipItem], list[str]]:
    """(clips still to encode, ids already done). BatchError if a done clip was made with other settings."""
    todo, done = [], []
    for item in items:
        code, res = layout.code(item.id), layout.result(item.id)
        if not redo and code.exists() and res.exists():
            r = _read_result(res)
            if r is not None and r.get("status") == "done":
                want = _settings_key(_clip_settings(settings, item), fit_processes, segment_settings)
                if r.get("settings") != want:
                    diff = sorted(k for k in set(want) | set(r.get("settings") or {})
                                  if want.get(k) != (r.get("settings") or {}).get(k))
                    raise BatchError(f"{res} was made with other settings (differ: {', '.join(diff)}); "
                                     "use another output folder, or --redo")
                done.append(item.id)
                continue
        todo.append(item)
    return todo, done


def _log(layout: Layout, dist: Dist, event: dict) -> None:
    path = layout.log(dist.rank, dist.world)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(_dumps({"time": time.time(), **event}) + "\n")


def _encode_one(item: ClipItem, settings, backbone, layout: Layout, dist: Dist, opts: BatchOptions, say) -> dict:
    """Encode one clip (all ranks when data-parallel); returns its result record (meaningful on the rank that writes).
    A clip longer than the backbone's native length is coded as segments (segments.py), up to the
    clip-length limit `opts.segment_settings`."""
    from . import codec
    from .metrics import evaluate
    from .segments import LongEncode, SegmentSettings, seam_report

    s = _clip_settings(settings, item)
    fit_processes = dist.world if opts.data_parallel else 1
    record: dict[str, Any] = {
        "id": item.id, "clip": item.path, "status": "error", "rank": dist.rank, "world": dist.world,
        "fit_processes": fit_processes, "settings": _settings_key(s, fit_processes, opts.segment_settings), "model": None,
        "resumed_from_step": None,
    }
    writer = (not opts.data_parallel) or dist.rank == 0
    t0 = time.perf_counter()
    state_path = layout.state(item.id, dist.rank if opts.data_parallel else None, dist.world)
    on_session = None
    if opts.data_parallel and dist.world > 1:
        def on_session(seg_session):  # every segment's fit is data-parallel
            seg_session.fitter.set_distributed(make_grad_sync(dist.world), dist.rank)
    with LongEncode.start(item.path, s, opts.segment_settings or SegmentSettings(), backbone=backbone,
                          on_session=on_session) as session:
        if opts.redo and state_path.exists():
            state_path.unlink()
        resume = state_path.exists()
        if opts.data_parallel and dist.world > 1:
            resume = _all_true(resume, dist.device)  # resume only if every rank has its state ...
            if resume and not _same_step(state_path, dist.device):  # ... at the same step
                say(f"{item.id}: the ranks' saved fit states are at different steps; starting the fit again")
                resume = False
        if resume:
            failure = None
            try:
                session.load_state(state_path)
            except LoraCodecError as exc:
                failure = f"cannot resume from {state_path} ({exc}); delete it or use --redo"
            if opts.data_parallel and dist.world > 1 and not _all_true(failure is None, dist.device):
                failure = failure or "another rank could not resume its fit state; delete states/ or use --redo"
            if failure:
                raise BatchError(failure)
            record["resumed_from_step"] = session.steps_done
            say(f"{item.id}: resuming the fit at step {session.steps_done}")
        callback = None
        if opts.save_every > 0:
            def callback(sp, _session=session):
                p = sp.progress
                if p is None or (p.step % opts.save_every == 0 and sp.steps_done < sp.total_steps):
                    state_path.parent.mkdir(parents=True, exist_ok=True)
                    _session.save_state(state_path)  # atomic (temporary file + rename)
        session.fit(callback=callback)
        res = session.finish()
        batch_size = session.session.fit_config.batch if session.single else session.fit_config.batch
    encode_seconds = time.perf_counter() - t0
    if opts.data_parallel and dist.world > 1:
        record["ranks_agree"] = _all_agree(res.data, dist.device)
    rep = res.report
    record.update(
        status="done", model=rep["model"], bytes=rep["total_bytes"], kbytes_per_second=rep["kbytes_per_second"],
        kbps=rep["kbytes_per_second"] * 8, bits_per_pixel=rep["bits_per_pixel"], frames=rep["frames"],
        height=rep["height"], width=rep["width"], fps=rep["fps"], fit_steps=rep["steps"],
        fit_seconds=rep["fit_seconds"], encode_seconds=round(encode_seconds, 3), final_mse=rep.get("final_mse"),
        effective_batch=batch_size * fit_processes, refine_bytes=rep.get("refine_bytes", 0),
        segments=rep.get("segments", 1), segment_reports=rep.get("segment_reports"),
        notes=rep.get("notes", []), code=str(layout.code(item.id).relative_to(layout.root)),
        backbone_fingerprint=rep["fingerprint"],
    )
    if backbone.is_tiny:
        record["backbone_note"] = TINY_NOTE
    if writer:
        _atomic_write(layout.code(item.id), res.data)
        if opts.metrics:
            t1 = time.perf_counter()
            dec = codec.decode(res.data, steps=opts.decode_steps, backbone=backbone)
            record["decode_seconds"] = round(time.perf_counter() - t1, 3)
            record["decode_steps"] = dec.report.get("decode_steps")
            if opts.perceptual:
                q = evaluate(res.frames, dec.frames)
            else:
                from .metrics import ms_ssim, psnr

                notes: list[str] = []
                q = {"psnr_rgb": psnr(res.frames, dec.frames), "psnr_y": psnr(res.frames, dec.frames, channel="y"),
                     "ms_ssim": ms_ssim(res.frames, dec.frames, notes=notes), "lpips": None, "dists": None,
                     "unavailable": "perceptual metrics not requested", "notes": notes}
            for k in ("psnr_rgb", "psnr_y", "ms_ssim", "lpips", "dists"):
                record[k] = q.get(k)
            if dec.code.n_segments > 1:
                record["seams"] = seam_report(res.frames, dec.frames, [g.start for g in dec.code.segment_list],
                                              dec.code.frames)
            record["perceptual_unavailable"] = q.get("unavailable")
            record["metric_notes"] = q.get("notes", [])
    for p in (state_path, state_path.with_name(state_path.name + ".tmp")):
        if p.exists():
            p.unlink()
    return record


def _error_record(item: ClipItem, settings, dist: Dist, opts: BatchOptions, exc: BaseException, bug: bool) -> dict:
    fit_processes = dist.world if opts.data_parallel else 1
    msg = " ".join(str(exc).split())[:500] or type(exc).__name__
    return {"id": item.id, "clip": item.path, "status": "error", "error": (f"{type(exc).__name__}: {msg}" if bug else msg),
            "rank": dist.rank, "world": dist.world, "fit_processes": fit_processes,
            "settings": _settings_key(_clip_settings(settings, item), fit_processes, opts.segment_settings)}


def merge(items: list[ClipItem], layout: Layout, meta: dict) -> dict:
    """Collect every clip's result into results.json and results.csv (atomically); returns the summary."""
    rows = []
    for item in items:
        r = _read_result(layout.result(item.id))
        if r is None:
            r = {"id": item.id, "clip": item.path, "status": "missing"}
        elif r.get("status") == "done" and not layout.code(item.id).exists():
            r = dict(r, status="missing", error="its code file is missing")
        rows.append(r)
    done = [r for r in rows if r.get("status") == "done"]

    def mean(key):
        vals = [r[key] for r in done if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        return sum(vals) / len(vals) if vals else None

    summary = {
        "clips": len(rows), "done": len(done), "errors": sum(r.get("status") == "error" for r in rows),
        "missing": sum(r.get("status") == "missing" for r in rows),
        "total_bytes": sum(r.get("bytes", 0) for r in done),
        "mean_bytes": mean("bytes"), "mean_kbps": mean("kbps"), "mean_bits_per_pixel": mean("bits_per_pixel"),
        "mean_psnr_rgb": mean("psnr_rgb"), "mean_psnr_y": mean("psnr_y"), "mean_ms_ssim": mean("ms_ssim"),
        "mean_lpips": mean("lpips"), "mean_dists": mean("dists"),
        "total_fit_seconds": sum(r.get("fit_seconds", 0) or 0 for r in done),
        "models": sorted({r["model"] for r in done if r.get("model")}),
    }
    if "tiny" in summary["models"]:
        summary["backbone_note"] = TINY_NOTE
    out = {"summary": summary, **meta, "clips": rows}
    _atomic_write(layout.root / "results.json", (_dumps(out, indent=1) + "\n").encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (r.get(k) if not isinstance(r.get(k), float) or math.isfinite(r[k])
                                                     else "inf")) for k in CSV_FIELDS})
    _atomic_write(layout.root / "results.csv", buf.getvalue().encode())
    return summary


def run_batch(inputs: list, outdir, settings, opts: BatchOptions | None = None, *, dist: Dist | None = None,
              backbone=None, timeout_hours: float = 72.0) -> dict | None:
    """Encode every clip of `inputs` into `outdir` (see the module docstring). Returns the merged
    summary on rank 0 (None on other ranks). Raises BatchError on rank 0 when some clips failed."""
    from .backbones import load_backbone, resolve_name

    opts = opts or BatchOptions()
    if opts.save_every < 0:
        raise BatchError("--save-every must be >= 0")
    if opts.decode_steps is not None and not 1 <= opts.decode_steps <= 10000:
        raise BatchError("--decode-steps must be in 1..10000")
    items = collect_clips(inputs)
    layout = Layout(Path(outdir))
    dist = dist or init_distributed(timeout_hours)

    def say(msg: str) -> None:
        if not opts.quiet:
            prefix = f"[rank {dist.rank}/{dist.world}] " if dist.world > 1 else ""
            print(f"{prefix}{msg}", file=sys.stderr, flush=True)

    if dist.world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") \
            and "WORLD_SIZE" not in os.environ and not os.environ.get("PMI_SIZE"):
        say("note: one process; `accelerate launch --cpu` starts several only through mpirun: on a machine "
            "without CUDA use `accelerate launch --multi_gpu --num_processes N` (torchrun, gloo on the CPU)")
    if opts.data_parallel and dist.world == 1:
        say("note: --data-parallel with one process: an ordinary fit")
    fit_processes = dist.world if opts.data_parallel else 1
    resolve_name(settings.model)
    todo, done = plan(items, layout, settings, fit_processes, opts.redo, opts.segment_settings)
    if todo:
        # every rank loads the backbone and checks the settings before any work, so that a bad setting
        # stops all ranks alike (a rank with an empty shard would otherwise wait at the barrier)
        from .codec import adapter_config_for, fit_config_for, refine_plan

        if backbone is None:
            device = dist.device if getattr(dist.device, "type", "cpu") == "cuda" else None
            backbone = load_backbone(settings.model, device=device)
        fit_config_for(backbone, settings)
        adapter_config_for(backbone, settings)
        refine_plan(settings, settings.sample_steps or backbone.defaults.sample_steps)
    dist.barrier()  # nobody writes before every rank has planned from the same files
    mine = todo if opts.data_parallel else shard(todo, dist.rank, dist.world)
    if dist.rank == 0:
        say(f"{len(items)} clips: {len(done)} already done, {len(todo)} to encode"
            + (f" by all {dist.world} processes together (data-parallel fit)" if opts.data_parallel
               else f" on {dist.world} process{'es' if dist.world > 1 else ''}"))
    if todo and backbone.is_tiny and dist.rank == 0:
        say("note: " + TINY_NOTE)
    writer = (not opts.data_parallel) or dist.rank == 0
    for n, item in enumerate(mine, 1):
        _log(layout, dist, {"event": "start", "id": item.id})
        bug = False
        try:
            record = _encode_one(item, settings, backbone, layout, dist, opts, say)
        except LoraCodecError as exc:  # the same on every rank (same clip, same settings)
            record = _error_record(item, settings, dist, opts, exc, bug=False)
        except Exception as exc:
            if opts.data_parallel and dist.world > 1:
                raise  # the other ranks would wait in a collective: stop the launch
            bug = True
            record = _error_record(item, settings, dist, opts, exc, bug=True)
        if writer:
            _atomic_write(layout.result(item.id), (_dumps(record, indent=1) + "\n").encode())
        _log(layout, dist, {"event": record["status"], "id": item.id, "bytes": record.get("bytes"),
                            "error": record.get("error")})
        if record["status"] == "done":
            q = f", PSNR {record['psnr_rgb']:.2f} dB" if isinstance(record.get("psnr_rgb"), float) else ""
            agree = "" if record.get("ranks_agree") in (None, True) else " (WARNING: ranks ended with different codes)"
            say(f"{item.id} ({n}/{len(mine)}): {record['bytes']} bytes{q}, fit {record['fit_seconds']:.1f} s{agree}")
        else:
            say(f"{item.id} ({n}/{len(mine)}): {'BUG ' if bug else ''}error: {record['error']}")
    dist.barrier()
    if dist.rank != 0:
        return None
    meta = {
        "command": " ".join(sys.argv) if sys.argv else None,
        "processes": dist.world,
        "data_parallel": opts.data_parallel,
        "settings": _settings_key(settings, fit_processes, opts.segment_settings),
        "metrics": opts.metrics,
        "output": str(layout.root),
    }
    summary = merge(items, layout, meta)
    return summary


# -- command line ------------------------------------------------------------------------------


def _add_encode_options(b) -> None:
    """The encode command's fit/code options (same names and meaning as `encode`)."""
    b.add_argument("--model", default="auto", help="auto (default: Wan on CUDA, else small), small (trained here, CPU), tiny (random, tests), wan2.1-t2v-1.3b")
    b.add_argument("--steps", type=int, default=None, help="total fit steps per clip (default: the backbone's)")
    rate = b.add_mutually_exclusive_group()
    rate.add_argument("--lambda", dest="rate_lambda", type=float, default=None, help="rate weight")
    rate.add_argument("--target-kb", type=float, default=None,
                      help="code size per clip in kB (1 kB = 1000 bytes; lands in [0.9, 1] x target)")
    b.add_argument("--caption", default="", help="caption for clips without their own (list file: PATH<TAB>CAPTION)")
    b.add_argument("--seed", type=int, default=0, help="noise seed of the decoder and seed of the fit")
    b.add_argument("--sample-steps", type=int, default=None, help="sampling steps stored as the decoding default")
    b.add_argument("--recipe", choices=["default", "paper"], default=None,
                   help="fit recipe: the backbone's default or the published one (docs/FIT.md)")
    b.add_argument("--noise-mode", choices=["random", "seed", "mix"], default=None,
                   help="fit on fresh noise (random, the paper) or the decoder's own noise (seed); default: the backbone's")
    b.add_argument("--rank", type=int, default=None, help="LoRA rank")
    b.add_argument("--theta-length", type=int, default=None,
                   help="number of adapter values each code stores (default: the backbone's)")
    b.add_argument("--proj-seed", type=int, default=0,
                   help="seed of the fixed random projection from those values to the adapter (default 0)")
    b.add_argument("--batch", type=int, default=None, help="fit samples per step (per process when --data-parallel)")
    b.add_argument("--start", type=float, default=0.0, help="start time in every clip (seconds)")
    from .cli import _add_segment_options

    _add_segment_options(b)
    b.add_argument("--refine-n", type=int, default=None, metavar="N", help="record a refinement track (see encode)")
    b.add_argument("--refine-steps", type=int, default=None, metavar="S",
                   help="sampling steps of the track's schedule (default: --sample-steps; see encode)")
    b.add_argument("--refine-select", choices=["gumbel", "greedy"], default="gumbel",
                   help="how the track chooses candidates (see encode)")
    b.add_argument("--refine-indexed", default=None, metavar="START:STOP",
                   help="steps that carry an index (see encode)")


def settings_from_args(args):
    from .codec import EncodeSettings

    return EncodeSettings(
        model=args.model, caption=args.caption or "", seed=args.seed, fit_steps=args.steps,
        rate_lambda=args.rate_lambda, target_kb=args.target_kb, sample_steps=args.sample_steps,
        noise_mode=args.noise_mode, rank=args.rank, theta_length=args.theta_length, proj_seed=args.proj_seed,
        batch=args.batch, start_seconds=args.start, refine_n=args.refine_n, refine_steps=args.refine_steps,
        refine_select=args.refine_select, refine_indexed=args.refine_indexed, recipe=args.recipe,
        measure=False,  # the batch decodes each code itself for its metrics (BatchOptions.metrics)
    )


def cmd_batch(args) -> int:
    settings = settings_from_args(args)
    if settings.fit_steps is not None and settings.fit_steps < 1:
        raise BatchError("--steps must be >= 1")
    from .cli import segment_settings_from_args

    opts = BatchOptions(metrics=not args.no_metrics, perceptual=not args.no_perceptual, decode_steps=args.decode_steps,
                        data_parallel=args.data_parallel, save_every=args.save_every, redo=args.redo,
                        quiet=args.quiet or args.json, segment_settings=segment_settings_from_args(args))
    summary = run_batch(args.inputs, args.output, settings, opts, timeout_hours=args.timeout_hours)
    if summary is None:
        return 0
    out = Path(args.output)
    if args.json:
        print(_dumps(summary))
    elif not args.quiet:
        q = f", mean PSNR {summary['mean_psnr_rgb']:.2f} dB" if summary["mean_psnr_rgb"] is not None else ""
        from .units import format_bytes_kb

        mb = f", mean {format_bytes_kb(round(summary['mean_bytes']))}" if summary["mean_bytes"] is not None else ""
        print(f"{summary['done']}/{summary['clips']} clips done{mb}{q}; wrote {out / 'results.json'} and "
              f"{out / 'results.csv'}")
        if summary.get("backbone_note"):
            print("note: " + summary["backbone_note"])
    failed = summary["errors"] + summary["missing"]
    if failed:
        raise BatchError(f"{failed} of {summary['clips']} clips failed or are missing (see {out / 'results.json'})")
    return 0


def add_command(sub) -> None:
    b = sub.add_parser("batch", help="encode many clips (restartable; several processes/GPUs with accelerate launch)",
                       description="Encode every clip of folders / list files. Run under `accelerate launch "
                                   "--multi_gpu --num_processes N -m lora_codec batch ...` to shard the clips over N "
                                   "processes, or add --data-parallel to fit each clip on all of them.")
    b.add_argument("inputs", nargs="+", metavar="DIR_OR_LIST", help="folders of clips, video files, or list files")
    b.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (codes/, results/, results.json, results.csv)")
    _add_encode_options(b)
    b.add_argument("--data-parallel", action="store_true",
                   help="fit each clip on all processes together (gradients averaged with all_reduce) instead of sharding clips")
    b.add_argument("--no-metrics", action="store_true", help="do not decode the codes to measure them")
    b.add_argument("--no-perceptual", action="store_true", help="skip LPIPS / DISTS even when their weights are present")
    b.add_argument("--decode-steps", type=int, default=None, help="sampling steps for the measuring decode (default: the code's)")
    b.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="save each clip's fit state every N steps (states/), so a restarted batch resumes it")
    b.add_argument("--redo", action="store_true", help="encode every clip again, even those already done")
    b.add_argument("--timeout-hours", type=float, default=72.0, help="how long ranks may wait for each other")
    b.add_argument("--json", action="store_true", help="print the summary as JSON (rank 0)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress or notes; only errors")
    b.set_defaults(func=cmd_batch)
