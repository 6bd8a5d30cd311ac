"""What the CLI subcommands do, given their parsed arguments."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .api import upscale_picture
from .bench import bench_model, bench_table, fresh_process_peak_mb, matmul_gflops, time_upscale
from .errors import UsageError
from .imageio import SUPPORTED_SUFFIXES, is_image_file, read_image, write_image
from .upscaler import UpscaleOptions, Upscaler
from .zoo import REAL_PHOTO_MODEL, compressed_input_note, load_model, model_provenance, resolve


def _options(args) -> UpscaleOptions:
    return UpscaleOptions(
        outscale=getattr(args, "outscale", None), tile=getattr(args, "tile", None),
        tile_overlap=getattr(args, "tile_overlap", None), sampling_steps=args.sampling_steps,
        seed=getattr(args, "seed", None) or 0, dtype=args.dtype,
        self_ensemble=args.self_ensemble,
    )


def warn_ignored(args, model: Upscaler) -> None:
    """One warning line per flag the model does not use."""
    if args.sampling_steps is not None and model.default_sampling_steps == 0:
        print(f"warning: --sampling-steps is ignored: {args.model} does not sample in steps",
              file=sys.stderr)
    if getattr(args, "seed", None) is not None and not model.seeded:
        print(f"warning: --seed is ignored: {args.model} has no noise (same output for any "
              "seed)", file=sys.stderr)


def check_tile(args, model: Upscaler) -> None:
    """A user's tile that cannot blend with the model's overlap, before any file is read."""
    overlap = model.tile_overlap if args.tile_overlap is None else args.tile_overlap
    if args.tile and 2 * overlap > args.tile:
        raise UsageError(f"argument --tile: {args.model} blends tiles over {overlap} px: use "
                         f"--tile {2 * overlap} or more, or --tile 0 (the whole image)")


def input_files(path: Path) -> list[Path]:
    """A single file, or the image files directly inside a folder (sorted); a folder without
    image files is a ``UsageError``."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            raise UsageError(f"argument -i/--input: no image files ({kinds}) in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    return [path]


def output_path(src: Path, out_dir: Path, ext: str, suffix: str) -> Path:
    """``<stem>_<suffix>.<ext>``; 'auto' keeps the input's format (the formats that hold 16
    bits keep them), HEIC / HEIF (read-only here) go to JPEG."""
    if ext == "auto":
        ext = src.suffix.lower().lstrip(".")
        if ext in ("heic", "heif"):
            ext = "jpg"
    stem = f"{src.stem}_{suffix}" if suffix else src.stem
    return out_dir / f"{stem}.{ext}"


def plan_outputs(files: list[Path], args) -> dict[Path, Path]:
    """Input -> output for the whole job, checked before any work: no output replaces an input
    (its own or another's), no two inputs write one output (names compared case-blind, as
    some file systems do), and no existing file is replaced without ``--overwrite``."""
    plan = {src: output_path(src, args.output, args.ext, args.suffix) for src in files}
    inputs = {src.resolve() for src in files}
    seen: dict[str, Path] = {}
    for src, dst in plan.items():
        if dst.resolve() in inputs:
            raise UsageError(f"{src} would be written to {dst}, an input: choose another "
                             "-o/--output or --suffix")
        key = str(dst.resolve()).casefold()
        if key in seen:
            raise UsageError(f"{seen[key]} and {src} would both be written to {dst}: rename one "
                             "or upscale them separately")
        seen[key] = src
    existing = [dst for dst in plan.values() if dst.exists()]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]}{more} already exist(s): add --overwrite to replace, or "
                         "choose another -o/--output or --suffix")
    return plan


def upscale_files(args) -> int:
    """Upscale every input; a failing file is reported and skipped; exit 1 if any failed.
    Progress bars (files, and tiles with time left) go to stderr when it is a terminal."""
    opts = _options(args)
    files = input_files(args.input)
    plan = plan_outputs(files, args)
    model = load_model(args.model, args.device)
    warn_ignored(args, model)
    check_tile(args, model)
    failures: list[tuple[Path, str]] = []
    quiet = True if args.quiet else None  # None: tqdm shows bars only on a terminal
    bar = tqdm(files, unit="img", desc="upscale", disable=quiet or len(files) < 2)
    noted = False  # one note per run, at the first compressed input
    for src in bar:
        try:
            pic = read_image(src, max_pixels=args.max_megapixels * 1_000_000)
            note = None if noted else compressed_input_note(src.name, pic.meta.jpeg_quality,
                                                            args.model)
            if note:
                bar.write(f"note: {note} (-n {REAL_PHOTO_MODEL})", file=sys.stderr)
                noted = True
            with tqdm(unit="tile", desc=src.name, leave=False, disable=quiet) as tiles:
                out = upscale_picture(model, pic, opts, _tile_progress(tiles), levels=True)
            dst = write_image(plan[src], out, args.quality)
            bar.write(f"{src} -> {dst}")
        except Exception as e:  # report, skip, keep going; the exit code says it failed
            failures.append((src, f"{type(e).__name__}: {e}"))
            bar.write(f"FAILED {src}: {type(e).__name__}: {e}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(files)} file(s) failed:", file=sys.stderr)
        for src, why in failures:
            print(f"  {src}: {why}", file=sys.stderr)
        return 1
    return 0


def _tile_progress(bar: tqdm):
    def update(done: int, total: int) -> None:
        if total > 1:
            if bar.total != total:
                bar.reset(total)  # restarts the clock with the total known: a time estimate
            bar.update(done - bar.n)

    return update


def evaluate(args) -> int:
    """Scores per set, printed as a table; a Markdown report with crops under --report."""
    # evaluation reads benchmark folders through fastdiffsr.data, which upscaling never imports
    from .evaluation import evaluate_set, format_table, model_cost, write_report

    model = load_model(args.model, args.device, deploy=not args.unfused)
    warn_ignored(args, model)
    if model.scale != args.scale:
        raise UsageError(f"argument --scale: model '{args.model}' is x{model.scale}, not "
                         f"x{args.scale}")
    opts = _options(args)
    results, strips = [], {}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        result, strip = evaluate_set(model, args.data, name, opts, args.degradation,
                                     args.write_lr)
        results.append(result)
        strips[name] = strip
    cost = model_cost(model, 128, opts)
    if args.degradation:
        print(f"LR: {args.degradation} applied to the HR (seeded per image), not the official LR")
    print(format_table(results, cost))
    if args.report:
        settings = {"scale": args.scale, "degradation": args.degradation or "none (official LR)",
                    "sampling_steps": args.sampling_steps, "seed": args.seed,
                    "dtype": args.dtype,
                    "form": "unfused" if args.unfused else "deploy",
                    "threads": torch.get_num_threads()}
        path = write_report(args.report, args.model, results, cost, strips, settings)
        print(f"report written to {path}")
    return 0


def bench(args) -> int:
    """Latency / memory / FLOPs table for the given LR sizes."""
    model = bench_model(args.model, args.device, deploy=not args.unfused)
    warn_ignored(args, model)
    opts = _options(args)
    sides = args.sizes  # a list: argparse applies the `sides` type to the default too
    threads = torch.get_num_threads()
    peaks = [fresh_process_peak_mb(args.model, s, not args.unfused, threads) for s in sides]
    timings = [time_upscale(model, s, args.repeats, opts) for s in sides]
    name = f"{args.model} (random weights)" if args.model.endswith(".toml") else args.model
    print(bench_table(name, model, timings, peaks, threads, matmul_gflops()))
    return 0


def export_model(args) -> int:
    """``fastdiffsr export``: the model's per-tile graph as ONNX or an ExecuTorch program (by
    the output's suffix; fp32, or int8 calibrated on training images)."""
    from .data.datasets import calibration_crops

    if args.output.suffix.lower() == ".pte":
        from .backends.executorch import export_pte as export
    else:
        from .backends.onnx import export_onnx as export

    model = load_model(args.model)
    calibration = None
    if args.dtype == "int8":
        calibration = calibration_crops(args.calibration, args.tile, model.scale)
    provenance = {"source": str(resolve(args.model)), "tile": args.tile, "dtype": args.dtype,
                  "calibration": None if calibration is None else str(args.calibration),
                  "torch": torch.__version__, "model": model_provenance(args.model)}
    path = export(model, args.output, args.tile, args.dtype, provenance, calibration)
    print(f"exported {args.model} ({args.dtype}) to {path}")
    return 0
