"""Command line: `python -m lora_codec encode|decode|info ...`.

User errors (missing file, not a video, corrupt code, other backbone, missing weights) exit 2 with
one line on stderr and no traceback; `--json` prints one JSON object on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

from .errors import LoraCodecError
from .units import (ceil_kb, format_bpp, format_bytes_kb, format_kb, format_rate, kilobytes, rate_words,
                    shown_frames)

EXIT_USER_ERROR = 2
log = logging.getLogger("lora_codec.cli")

CAPTION_NOTE = ("no caption: a short caption of what the clip shows (--caption \"...\") conditions the model and "
                "helps the fit; it is stored in the code (compressed)")


class StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM during a fit: the first asks the fit to stop at the end of its step
    (calling the object returns True from then on); a second raises KeyboardInterrupt at once. Use as a
    context manager around the fit; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name: str | None = None
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum, frame=None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name

    def __enter__(self):
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _rate_text(report: dict) -> str:
    """', 4.9 kbit/s' for a video; '' for a one-frame code (a picture has no rate per second)."""
    rate = rate_words(report["total_bytes"], report.get("seconds"), report.get("frames", 0))
    return f", {rate}" if rate else ""


def _check_target(session, target_kb: float) -> None:
    """Refuse a --target-kb below the smallest code for this clip, caption and settings, before fitting."""
    from .codec import minimum_code_bytes

    least = minimum_code_bytes(session.backbone, session.settings.caption, session.settings,
                               geometry=session.geometry, fps=session.fps, src=session.src)
    if target_kb * 1000 < least:
        track = " and refinement track" if session.settings.refine_n else ""
        raise LoraCodecError(
            f"the smallest code for this clip and caption{track} is {format_kb(least)} ({least} bytes); "
            f"--target-kb {target_kb:g} is below it: ask for at least {ceil_kb(least):g} kB"
            + (", or use a shorter caption" if session.settings.caption else ""))


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _print_json(obj) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    print(json.dumps(clean(obj), default=_json_default))


def _progress_bar(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False)


def _lazy_bar(desc: str, quiet: bool):
    """A progress callback `(i, n)` whose bar is created on the first call (n known then), and its closer."""
    holder = {}

    def progress(i, n):
        if "bar" not in holder:
            holder["bar"] = _progress_bar(n, desc, disable=quiet)
        holder["bar"].n = i
        holder["bar"].refresh()

    def close():
        if "bar" in holder:
            holder["bar"].close()

    return progress, close


def _check_outputs_before_work(*paths) -> None:
    """Refuse unwritable output paths before any fitting or sampling starts (creating missing folders)."""
    from .video import check_writable

    for p in paths:
        if p:
            _make_parent(p)
            check_writable(p)


def _make_parent(path) -> None:
    """Create the folder an output goes to (a user error, not a traceback, when that fails)."""
    parent = Path(path).parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LoraCodecError(f"cannot create the folder {parent} ({e.strerror or e})") from None


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`--size WxH` -> (width, height) in pixels; None for None / 'native'. LoraCodecError when malformed
    (whether the backbone codes that size is checked when the clip is read)."""
    if text is None or text.strip().lower() in ("", "native"):
        return None
    parts = text.strip().lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise LoraCodecError(f"--size must look like 480x272 (width x height in pixels), got '{text}'") from None
    if w < 1 or h < 1 or w > 16384 or h > 16384:
        raise LoraCodecError(f"--size {text}: width and height must be in 1..16384")
    return w, h


def segment_settings_from_args(args):
    """--max-seconds / --overlap -> segments.SegmentSettings (encode and batch)."""
    from .segments import SegmentSettings

    max_seconds = getattr(args, "max_seconds", None)
    if max_seconds == 0:
        max_seconds = None  # 0: no clip-length limit (the reader's limits still apply)
    seg = SegmentSettings(max_seconds=max_seconds, overlap=getattr(args, "overlap", None) or 0)
    seg.check()
    return seg


def cmd_encode(args) -> int:
    from . import codec, segments

    src = Path(args.input)
    if not src.exists():
        raise LoraCodecError(f"no such file: {src}")
    settings = codec.EncodeSettings(
        model=args.model, caption=args.caption or "", seed=args.seed, fit_steps=args.steps,
        rate_lambda=args.rate_lambda, target_kb=args.target_kb, sample_steps=args.sample_steps,
        noise_mode=args.noise_mode, rank=args.rank, theta_length=args.theta_length, proj_seed=args.proj_seed,
        batch=args.batch, start_seconds=args.start, size=parse_size(args.size),
        refine_n=args.refine_n, refine_steps=args.refine_steps, refine_select=args.refine_select,
        refine_indexed=args.refine_indexed, recipe=args.recipe, measure=not args.no_measure,
    )
    seg = segment_settings_from_args(args)
    out = Path(args.output)
    state_path = Path(args.save_state) if args.save_state else out.with_name(out.name + ".state")
    _check_outputs_before_work(out, args.text, args.save_state)
    quiet = args.json or args.quiet
    # a clip longer than the backbone's native length is coded as segments (segments.py)
    with segments.LongEncode.start(src, settings, seg) as session:
        for note in session.notes:
            if not quiet:
                print(f"note: {note}", file=sys.stderr)
        if not settings.caption:
            log.warning(CAPTION_NOTE)
        if (session.backbone.is_tiny or session.backbone.is_small) and not quiet:
            print("note: " + session.backbone.describe(), file=sys.stderr)
        if args.target_kb is not None and session.single:  # a long clip's target is checked as its first segment opens
            _check_target(session.session, args.target_kb)
        if args.resume:
            session.load_state(args.resume)
        n_seg = session.segments
        bar = _progress_bar(session.total_steps, "fitting" if n_seg == 1 else f"segment 1/{n_seg}", disable=quiet)
        bar.update(session.steps_done)

        every = args.checkpoint_every

        def on_step(sp):
            p = sp.progress
            if p is None:  # a segment was just finished: its code is in the state from now on
                if every:
                    session.save_state(state_path)
                return
            if every and p.step % every == 0 and sp.steps_done < sp.total_steps:
                session.save_state(state_path)  # atomic: survives a kill at any moment
            bar.n = min(sp.steps_done, bar.total)
            if n_seg > 1:
                bar.set_description(f"segment {sp.segment + 1}/{n_seg}", refresh=False)
            bar.set_postfix(stage=p.stage, loss=f"{p.loss:.4f}", kB=f"{kilobytes(p.est_payload_bytes):.2f}",
                            refresh=False)
            bar.refresh()

        stop = StopOnSignal()
        try:
            with stop:
                done = session.fit(callback=on_step, max_steps=args.stop_after, should_stop=stop)
        finally:
            bar.close()
        if not done:
            # The fit is anytime: keep its state (to resume) and write a valid code from it, as the app's
            # Stop early does. The state is saved first, so a second Ctrl-C while the code is written loses
            # nothing. A long clip's code then holds the segments fitted so far (the running one as it is).
            session.save_state(state_path)
            if not args.quiet:  # also with --json: the user asked for this stop
                how = f"after {stop.signal_name}" if stop.signal_name else "as asked (--stop-after)"
                segs = (f" ({len(session.segments_done)} of {n_seg} segments done; the code holds the segments fitted "
                        "so far)") if n_seg > 1 else ""
                print(f"stopped {how} at step {session.steps_done}/{session.total_steps}{segs}: the fit state "
                      f"is saved to {state_path}; writing a code of the fit so far to {out} (Ctrl-C again aborts "
                      f"that). To continue the fit, run the same command with --resume {state_path}",
                      file=sys.stderr)
        if args.save_state and done:
            session.save_state(state_path)
        steps_done, total_steps = session.steps_done, session.total_steps
        on_refine, close_refine = _lazy_bar("refinement track", quiet)
        try:
            result = session.finish(progress=on_refine, partial=not done)
        finally:
            close_refine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.data)
    if done and not args.save_state and state_path.exists():
        state_path.unlink()  # the code is written: the periodic checkpoint has done its job
    if args.text:
        from .bitstream import to_text

        Path(args.text).write_text(to_text(result.data) + "\n")
    report = dict(result.report)
    report["output"] = str(out)
    if not done:
        report.update(stopped=True, state=str(state_path), steps=steps_done, total_steps=total_steps)
    if args.json:
        _print_json(report)
        return 0
    if args.quiet:
        print(out)
        if not done:
            print(state_path)
        return 0
    print(f"wrote {out}: {format_bytes_kb(report['total_bytes'])}{_rate_text(report)}, "
          f"{format_bpp(report['total_bytes'], report['frames'] * report['height'] * report['width'])}; "
          f"{report['steps']} fit steps in {report['fit_seconds']:.1f} s")
    if report.get("segments", 1) > 1:
        per = ", ".join(f"{r['fit_seconds']:.1f} s" for r in report.get("segment_reports", []))
        print(f"{report['segments']} segments of {report['segment_frames']} frames ({report['frames']} frames, "
              f"{report['seconds']:.2f} s); fit time per segment: {per}; "
              f"{'one prior shared by all segments' if report.get('shared_prior') else 'a prior per segment'}")
    if report.get("refine_n"):
        print(f"refinement track: {report['refine_bytes']} bytes ({report['refine_bits']} index bits, "
              f"N = {report['refine_n']}, {report['refine_steps']} steps) in {report['refine_seconds']:.1f} s")
    if report.get("decoded_psnr") is not None:
        print(f"decoded quality: {report['decoded_psnr']:.2f} dB PSNR against the coded frames (the code decoded "
              f"as a receiver would, in {report['measure_seconds']:.1f} s)")
    if not done:
        print(f"stopped early at step {report['steps']} of {report['total_steps']}: {out} is a valid code of the fit "
              f"so far; continue the fit with --resume {state_path}")
    return 0


def _read_code_arg(path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise LoraCodecError(f"no such file: {p}")
    from .bitstream import MAX_CODE_BYTES

    if p.stat().st_size > MAX_CODE_BYTES * 2:
        raise LoraCodecError(f"{p} is too large to be a code ({p.stat().st_size} bytes)")
    from .bitstream import load_code_bytes

    return load_code_bytes(p.read_bytes())


def _merge_inputs(args) -> tuple[list[bytes], list[str], list[float] | None]:
    """--merge B.vov[:W] (repeatable) and --weights -> (codes, names, weights or None)."""
    from .merge import MergeError, parse_merge_arg, parse_weights

    items = [parse_merge_arg(m) for m in (getattr(args, "merge", None) or [])]
    if not items:
        if getattr(args, "weights", None):
            raise MergeError("--weights is for merged decoding: give the other codes with --merge")
        return [], [], None
    for path, w in items:
        base, sep, tail = path.rpartition(":")
        if w is None and sep and not Path(path).exists() and Path(base).is_file():
            raise MergeError(f"--merge {path}: the weight after ':' must be a number, e.g. {base}:0.5")
    codes = [_read_code_arg(path) for path, _w in items]
    names = [Path(args.input).name] + [Path(path).name for path, _w in items]
    inline = [w for _p, w in items]
    if getattr(args, "weights", None):
        if any(w is not None for w in inline):
            raise MergeError("give the weights either with --weights or as --merge FILE:WEIGHT, not both")
        weights = parse_weights(args.weights, len(codes) + 1)
    else:
        # FILE:W gives that code's weight; the decoded code and codes without one get 1
        weights = [1.0] + [1.0 if w is None else w for w in inline]
    return codes, names, weights


def cmd_decode(args) -> int:
    from . import codec
    from .video import write_video

    from .bitstream import read_code
    from .segments import output_frames_for
    from .video import check_video_output

    data = _read_code_arg(args.input)
    merge, names, weights = _merge_inputs(args)
    out = Path(args.output)
    _make_parent(out)
    code = read_code(data)
    # before sampling: extension, one frame for .png, folder, the segment range
    check_video_output(out, output_frames_for(code, args.segments))
    quiet = args.json or args.quiet
    progress, close_bar = _lazy_bar("sampling", quiet)

    kwargs = {}
    refine = getattr(args, "refine", None)
    if refine is not None:
        kwargs["refine"] = refine
    if merge:
        kwargs.update(merge=merge, weights=weights, merge_names=names)
    if args.segments is not None:
        kwargs["segments"] = args.segments
    try:
        result = codec.decode(data, steps=args.steps, caption=args.caption, progress=progress, **kwargs)
    finally:
        close_bar()
    write_video(out, result.frames, result.fps)
    report = dict(result.report)
    report["output"] = str(out)
    if args.json:
        _print_json(report)
    elif args.quiet:
        print(out)
    else:
        if result.code.model == "tiny":
            print("note: decoded with the tiny backbone (no visual knowledge): the frames are not a meaningful "
                  "reconstruction", file=sys.stderr)
        for note in report.get("decode_notes", []):
            print(f"note: {note}", file=sys.stderr)
        replayed = report.get("decode_refined_steps") or 0
        track = f", replaying {replayed} refinement-track steps" if replayed else ""
        segs = ""
        if result.code.n_segments > 1:
            a, b = report["decode_segments"]
            segs = (f", segment{'s' if b > a else ''} {a}{'-' + str(b) if b > a else ''} of {result.code.n_segments} "
                    f"from {report['decode_start_seconds']:.2f} s")
        merged = f"; merged {report['decode_merge']}" if report.get("decode_merge") else ""
        n, h, w = result.frames.shape[:3]
        print(f"wrote {out}: {shown_frames(n, w, h)} "
              f"in {report['decode_seconds']:.1f} s ({report['decode_steps']} sampling steps{track}{segs}){merged}")
    return 0


def cmd_info(args) -> int:
    from .codec import describe

    info = describe(_read_code_arg(args.input))
    if args.json:
        _print_json(info)
    else:
        print(format_info(info))
    return 0


def format_info(info: dict) -> str:
    """`describe()`'s dict as a short summary for a person: rounded numbers with units (`units`: kB = 1000
    bytes, rates in kbit/s), no raw keys and no empty values. `info --json` prints every field instead."""
    def b(n) -> str:
        return f"{int(n):,} B"

    seconds = info["frames"] / info["fps"] if info.get("fps") else None
    parts = [f"header {b(info['header_bytes'])}", f"caption {b(info['caption_bytes'])}",
             f"prior {b(info['prior_bytes'])}",
             f"payload {b(info['payload_bytes'])} (ideal {int(round(info['ideal_payload_bits'] / 8)):,} B)"]
    if info.get("sections_bytes"):
        parts.append(f"other sections {b(info['sections_bytes'])}")
    noise = {"seed": "fitted on the decoder's own noise", "random": "fitted on random noise"}.get(
        str(info.get("noise_mode")), f"noise mode {info.get('noise_mode')}")
    lines = [
        f"code:     {format_bytes_kb(info['total_bytes'])}{_rate_text(info)}"
        + f", {format_bpp(info['total_bytes'], info['frames'] * info['height'] * info['width'])}",
        "          " + " + ".join(parts),
        f"model:    {info['model']} (weights fingerprint {info['fingerprint']})",
        (f"picture:  {info['width']}x{info['height']} (a one-frame code)" if info["frames"] == 1 else
         f"video:    {info['frames']} frames of {info['width']}x{info['height']}"
         + (f" at {info['fps']:.4g} fps ({seconds:.2f} s)" if seconds else ""))
        + (f", from a {info['src_width']}x{info['src_height']} source" if info.get("src_width") else ""),
        f"caption:  {info['caption']!r}" if info.get("caption") else "caption:  (none)",
        f"adapter:  {info['theta_length']:,} values, rank {info['rank']}, {len(info.get('targets') or [])} projections "
        f"per block, quantisation step {info['step_size']:.4g}",
        f"decoding: {info['sample_steps']} sampling steps, shift {info['shift']:g}, guidance {info['guidance']:g}, "
        f"noise seed {info['noise_seed']} ({noise})",
    ]
    if info.get("segments", 1) > 1:
        lines.insert(4, f"segments: {info['segments']} of {info['segment_frames']} frames (a fitted adapter each), "
                        f"starting at frames {', '.join(str(s) for s in info['segment_starts'])}; "
                        + ("one prior shared by all" if info.get("shared_prior") else "a prior each"))
    if info.get("refine_n"):
        lines.append(f"refinement track: best of {info['refine_n']:,} candidates at each indexed step of a "
                     f"{info['refine_steps']}-step schedule, {b(info['refine_bytes'])}")
    else:
        lines.append("refinement track: none")
    return "\n".join(lines)


def _add_segment_options(p) -> None:
    """Long clips (encode and batch): the clip-length limit and the segments' overlap."""
    from .segments import DEFAULT_MAX_SECONDS, DEFAULT_OVERLAP

    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help=f"clip-length limit: code every frame of the first S seconds (default {DEFAULT_MAX_SECONDS:g}; "
                        "0 = no limit but the reader's). A clip longer than the model's native length (81 frames for "
                        "Wan, 9 for small, 17 for tiny) is coded as segments of that length, a fitted adapter each, in "
                        "one code file")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, metavar="N",
                   help=f"frames that consecutive segments share at least, blended by the decoder to soften the seams "
                        f"(default {DEFAULT_OVERLAP}; more costs bytes: more segments)")


JSON_HELP = "print the result as one JSON object on stdout (no notes or progress; warnings still go to stderr)"
QUIET_HELP = "quiet: no progress, notes or warnings; only errors, and the path of what was written"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora_codec",
                                description="Video compression as adaptation of a frozen video diffusion model.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="fit a code to a clip",
                       description="Fit a code to a clip. Ctrl-C stops the fit early: the fit state is saved and a "
                                   "valid code of the fit so far is written (--resume continues it); a second "
                                   "Ctrl-C aborts.")
    e.add_argument("input", help="a video file (anything PyAV can open) or a still picture (PNG, JPEG, WebP: a "
                                 "one-frame code)")
    e.add_argument("-o", "--output", required=True, help="the code file to write (.vov)")
    e.add_argument("--model", default="auto",
                   help="auto (default: Wan on CUDA, else small), small (trained here, CPU), tiny (random, tests), "
                        "wan2.1-t2v-1.3b (a CUDA GPU and its weights: the hub, or a folder named by "
                        "LORA_CODEC_WAN_PATH)")
    e.add_argument("--steps", type=int, default=None,
                   help="total fit steps (default: the backbone's); per segment for a long clip")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--lambda", dest="rate_lambda", type=float, default=None,
                      help="rate weight: larger gives smaller codes and lower quality (default: the backbone's)")
    rate.add_argument("--target-kb", type=float, default=None,
                      help="final code size in kB (1 kB = 1000 bytes), for the whole file (all segments of a long "
                           "clip); lands in [0.9, 1] x target (a long clip: about, never above). A target below the "
                           "smallest possible code for the clip and caption is refused before fitting")
    e.add_argument("--caption", default="",
                   help="what the clip shows, in a few words: the model is conditioned on it, which helps the fit "
                        "(stored in the code, compressed)")
    e.add_argument("--seed", type=int, default=0, help="noise seed of the decoder and seed of the fit")
    e.add_argument("--sample-steps", type=int, default=None, help="sampling steps stored as the decoding default")
    e.add_argument("--recipe", choices=["default", "paper"], default=None,
                   help="fit recipe: the backbone's default, or the published one (10,000 fit samples; docs/FIT.md); "
                        "the options below override single settings of it")
    e.add_argument("--noise-mode", choices=["random", "seed", "mix"], default=None,
                   help="fit on random noise (the paper's), on the decoder's own seed noise, or a mix of both; "
                        "default: the recipe's (seed for small)")
    e.add_argument("--no-measure", action="store_true",
                   help="do not decode the written code to report its PSNR (saves one decode)")
    e.add_argument("--rank", type=int, default=None,
                   help="rank of the adapter's low-rank factors (default: the backbone's)")
    e.add_argument("--theta-length", type=int, default=None,
                   help="number of adapter values the code stores (default: the backbone's)")
    e.add_argument("--proj-seed", type=int, default=0,
                   help="seed of the fixed random projection from those values to the adapter (default 0)")
    e.add_argument("--batch", type=int, default=None, help="fit samples per step (default: the backbone's)")
    e.add_argument("--start", type=float, default=0.0, help="start time in the clip (seconds)")
    _add_segment_options(e)
    e.add_argument("--size", default=None, metavar="WxH",
                   help="coded width x height in pixels (default: the model's native size, 832x480 for Wan, "
                        "transposed for portrait clips). Wan codes any multiples of 16 up to 832x480's pixel "
                        "count, e.g. 480x272 or 624x352 (or 272x480 portrait); it was trained at 480p, so "
                        "smaller sizes cost quality. The picture is resized and centre-cropped, never stretched")
    e.add_argument("--resume", default=None, metavar="STATE",
                   help="continue a fit from its saved state file (same input and options)")
    e.add_argument("--save-state", default=None, metavar="STATE",
                   help="where to write the fit state (default OUTPUT.state, kept when the fit is stopped early)")
    e.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N steps: save the state and write a code of the fit so far (as Ctrl-C does)")
    e.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                   help="save the fit state every N steps (default 50; 0 = only when stopped), so a killed "
                        "encode resumes with --resume")
    e.add_argument("--text", default=None, help="also write the code's one-line text form to this file")
    e.add_argument("--refine-n", type=int, default=None, metavar="N",
                   help="record a refinement track: best of N candidate noises per step (N a power of two, 2..65536; "
                        "log2 N bits per indexed step)")
    e.add_argument("--refine-steps", type=int, default=None, metavar="S",
                   help="sampling steps of the schedule the track is recorded on (default: --sample-steps)")
    e.add_argument("--refine-select", choices=["gumbel", "greedy"], default="gumbel",
                   help="choose candidates by Gumbel-max sampling of the importance weights (default) or greedily")
    e.add_argument("--refine-indexed", default=None, metavar="START:STOP",
                   help="steps that carry an index (Python slice of 0..S-1; default all but the last, ':-1')")
    e.add_argument("--json", action="store_true", help=JSON_HELP)
    e.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="regenerate a clip from a code")
    d.add_argument("input", help="a code file (.vov) or its text form")
    d.add_argument("-o", "--output", required=True,
                   help="the file to write: .mp4 (H.264), .mkv (FFV1, lossless) or, for a one-frame code (a still "
                        "picture), .png")
    d.add_argument("--steps", type=int, default=None, help="sampling steps (default: stored in the code)")
    d.add_argument("--caption", default=None, help="decode with another caption (editing)")
    d.add_argument("--segments", default=None, metavar="RANGE",
                   help="a long clip's code: decode only these segments (1-based: 2, 2-3, 2- or -3; default all), "
                        "written as one continuous video")
    d.add_argument("--merge", action="append", default=None, metavar="B.vov[:W]",
                   help="editing: decode with this code's adapter applied too (the updates add: rank concatenation), "
                        "with weight W (default 1); repeatable. Same backbone, geometry and adapter structure; the "
                        "first code gives caption, noise seed and steps")
    d.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="merge weights, one per code, the decoded code first (e.g. 0.5,0.5); instead of FILE:W")
    d.add_argument("--refine", default=None, metavar="all|none|K",
                   help="refinement track: replay all of it (default), none (plain ODE with --steps), or its first "
                        "K indexed steps then the ODE on the same schedule")
    d.add_argument("--json", action="store_true", help=JSON_HELP)
    d.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="describe a code")
    i.add_argument("input", help="a code file (.vov) or its text form")
    i.add_argument("--json", action="store_true", help="print every field as one JSON object instead of the summary")
    i.set_defaults(func=cmd_info)

    from .evaluation import add_commands  # compare, batch

    add_commands(sub)
    return p


class _Once(logging.Filter):
    """Let each distinct message through once (a warning repeated per clip, per load or per call)."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _Stderr(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stderr` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


# Libraries whose own log lines are for their developers (download retries, deprecations, load reports):
# only their errors reach the user; what matters is said by lora_codec's own messages.
LIBRARY_LOGGERS = ("diffusers", "transformers", "peft", "huggingface_hub", "accelerate", "torch", "PIL")


def setup_output(quiet: bool = False) -> logging.Handler:
    """Route every warning the user sees through one stderr handler that prints each message once
    (`note: ...`): lora_codec's log records and Python warnings (`warnings.warn` from torch, diffusers,
    transformers: one line, category and message, no source line). `quiet`: errors only. Replaces the
    handler an earlier call installed. Returns the handler."""
    import warnings

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_lora_codec", False):
            root.removeHandler(h)
    handler = _Stderr()
    handler._lora_codec = True
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    handler.addFilter(_Once())
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        warnings.simplefilter("ignore")
    warn_log = logging.getLogger("lora_codec.warnings")

    def show(message, category, filename, lineno, file=None, line=None):
        warn_log.warning("%s: %s", category.__name__, str(message).strip().splitlines()[0] if str(message).strip()
                         else "")

    warnings.showwarning = show
    return handler


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_output(quiet=bool(getattr(args, "quiet", False)))
    try:
        return args.func(args)
    except LoraCodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
