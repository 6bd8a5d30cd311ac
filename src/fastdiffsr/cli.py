"""The ``fastdiffsr`` command: upscale | eval | train | bench | export | serve | models."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import USER_ERRORS, UsageError
from .zoo import ALIASES, DEFAULT_MODEL, available_models, summary

# torch is imported by the commands that run a model, not here: `models` and `--help` answer
# in a fraction of a second. USER_ERRORS are the user's input, not a bug: one line on stderr,
# exit status 2, no traceback.

DEFAULT_BENCH_DATA = Path("../shared/data/bench")
MAX_SIDE = 16384  # LR pixels: a tile or benchmark side beyond this is a typo, not a plan
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range
# data.degradations.NAMED's keys (tested equal), here so that --help needs no torch
DEGRADATIONS = ("jpeg60", "noise5", "realesrgan-mild", "realesrgan-severe", "realesrgan-photo",
                "photo-mix")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``PROG: error: MESSAGE``, with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def integer(lo: int, hi: int, zero: bool = False) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], or 0 as well when ``zero``."""
    allowed = f"0 or {lo}..{hi}" if zero else f"{lo}..{hi}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer {allowed}, got {text!r}") from None
        if not (lo <= value <= hi or (zero and value == 0)):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def scale_factor(text: str) -> float:
    """An argparse type: a finite output scale in (0, 16]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 16], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 16):
        raise argparse.ArgumentTypeError(f"must be a number in (0, 16], got {text}")
    return value


def sides(text: str) -> list[int]:
    """An argparse type: comma-separated LR sides, each 16..4096."""
    parse = integer(16, 4096)
    values = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected LR sides such as 128,512")
    return values


def _models_help() -> str:
    names = [f"{n} (default)" if n == DEFAULT_MODEL else n for n in available_models()]
    aliases = ", ".join(f"{a} = {n}" for a, n in ALIASES.items())
    return (f"a shipped model: {', '.join(names)} (aliases: {aliases}; `fastdiffsr models` "
            "compares them), or a .safetensors / .onnx / .pte file")


def _add_model(p) -> None:
    p.add_argument("-n", "--model", default=DEFAULT_MODEL, help=_models_help())


def _add_inference_options(p) -> None:
    p.add_argument("--sampling-steps", "--steps", type=integer(1, 1000), dest="sampling_steps",
                   help="diffusion sampling steps (default: the model's; ignored, with a "
                        "warning, by models that do not sample)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: convolutions and matmuls in bfloat16 (PyTorch models)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the model over the 8 flips and rotations of each tile "
                        "(x8 self-ensemble: a little sharper, 8x the time)")


def _add_seed(p) -> None:
    p.add_argument("--seed", type=integer(0, MAX_SEED),
                   help="noise seed of the diffusion models: another seed, other detail "
                        "(default: 0)")


def _add_threads(p, default: int | None = None) -> None:
    p.add_argument("--threads", type=integer(1, 1024), default=default,
                   help="CPU threads for torch" + ("" if default else " (default: torch's)"))


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="upscale an image or a folder of images",
                       formatter_class=Help)
    p.add_argument("-i", "--input", required=True, type=Path, help="image file or folder")
    p.add_argument("-o", "--output", type=Path, default=Path("results"), help="output folder")
    _add_model(p)
    p.add_argument("-s", "--outscale", type=scale_factor,
                   help="final scale, (0, 16] (default: the model's); other than the model's, "
                        "its output is resized with bicubic")
    p.add_argument("--tile", type=integer(1, MAX_SIDE, zero=True),
                   help="LR tile side, 0 for the whole image (default: the largest that fits "
                        "a 2 GiB activation budget, capped by the model)")
    p.add_argument("--tile-overlap", type=integer(0, MAX_SIDE // 2),
                   help="LR overlap of neighbouring tiles, at most half the tile (default: "
                        "the model's)")
    _add_inference_options(p)
    _add_seed(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    _add_threads(p)
    p.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp", "avif"],
                   help="output format; auto keeps the input's (16-bit goes to PNG, HEIC to "
                        "JPEG); ICC profile, EXIF, DPI and PNG text carry over where it can "
                        "hold them")
    p.add_argument("--quality", type=integer(1, 100), default=95,
                   help="JPEG / WebP / AVIF quality")
    p.add_argument("--max-megapixels", type=integer(1, 10_000), default=50,
                   help="refuse inputs whose header declares more pixels (decompression bombs)")
    p.add_argument("--suffix", default="out", help="output name suffix ('' for none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never an input)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM-Y on benchmark sets (the literature's protocol)",
                       formatter_class=Help)
    _add_model(p)
    p.add_argument("--data", type=Path, default=DEFAULT_BENCH_DATA,
                   help="folder of benchmark sets (<set>/HR, <set>/LR_bicubic/X<scale>)")
    p.add_argument("--sets", default="Set5,Set14,B100", help="comma-separated set names")
    p.add_argument("--scale", type=int, default=4, choices=[2, 3, 4], help="the model's scale")
    p.add_argument("--report", type=Path, help="folder for report.md, results.json, crops")
    p.add_argument("--degradation", choices=DEGRADATIONS,
                   help="make each LR from the HR by this fixed, seeded degradation instead of "
                        "reading the official LR (real-world inputs: JPEG, noise, blur)")
    p.add_argument("--write-lr", type=Path, metavar="DIR",
                   help="with --degradation: write the degraded LR files under DIR")
    _add_inference_options(p)
    _add_seed(p)
    p.add_argument("--unfused", action="store_true", help="evaluate the training form")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    _add_threads(p)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency, peak memory, params and FLOPs",
                       formatter_class=Help)
    p.add_argument("-n", "--model", default=DEFAULT_MODEL,
                   help="shipped name, weights file, or a training config .toml (random weights)")
    _add_threads(p, default=2)
    p.add_argument("--repeats", type=integer(1, 1000), default=5, help="timed runs per size")
    p.add_argument("--sizes", type=sides, default="128,512", help="LR sides to time")
    _add_inference_options(p)
    p.add_argument("--unfused", action="store_true", help="time the training form")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a method's stages from a TOML config",
                       formatter_class=Help)
    p.add_argument("config", type=Path, help="a training config, e.g. configs/rdsr/x4.toml")
    p.add_argument("--stage", help="run only this stage (default: every unfinished stage)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/<stage>/last.ckpt")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, help="output folder (default runs/<config name>)")
    p.add_argument("--stop-at", type=integer(1, 10**9), metavar="ITERATION",
                   help="stop after this training iteration (resume later)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.conditioning=concat "
                        "--set teacher_x2.iterations=400 (repeatable; recorded in the model "
                        "file; a relative path resolves against the config file's folder)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or ExecuTorch (fp32 or int8) for "
                       "deployment",
                       formatter_class=Help)
    _add_model(p)
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the file to write: .onnx (ONNX Runtime) or .pte (ExecuTorch, XNNPACK)")
    p.add_argument("--tile", type=integer(16, 2048), default=128,
                   help="LR side the graph is traced and calibrated at (any size runs)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "int8"],
                   help="int8: static quantization (ONNX Runtime's, or XNNPACK's for .pte)")
    p.add_argument("--calibration", type=Path, default=Path("../shared/data/train"),
                   help="training images for int8 calibration (never a benchmark set)")
    _add_threads(p)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page and HTTP API (needs fastdiffsr[serve])",
                       formatter_class=Help)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (another than localhost exposes it to the network)")
    p.add_argument("--port", type=integer(1, 65535), default=8000, help="TCP port")
    p.add_argument("--models", type=model_list, default=None,
                   help="comma-separated models to offer (default: every shipped one)")
    p.add_argument("--max-upload-mb", type=integer(1, 1024), default=32,
                   help="largest upload accepted")
    p.add_argument("--max-megapixels", type=integer(1, 50), default=4,
                   help="largest input picture accepted, checked before it is decoded")
    p.add_argument("--workers", type=integer(1, 64), default=1, help="jobs that run at once")
    p.add_argument("--queue", type=integer(0, 1024), default=8,
                   help="jobs that may wait; beyond, a request gets 503")
    p.add_argument("--keep-minutes", type=integer(1, 1440), default=10,
                   help="how long a result stays downloadable")
    _add_threads(p)


def model_list(text: str) -> list[str]:
    """An argparse type: comma-separated names of shipped models (or their aliases)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = [*available_models(), *ALIASES]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or '(none)'}; "
                                         f"shipped: {', '.join(known)}")
    return names


def cmd_upscale(args) -> int:
    from .commands import upscale_files

    _threads(args.threads)
    return upscale_files(args)


def cmd_eval(args) -> int:
    from .commands import evaluate

    _threads(args.threads)
    return evaluate(args)


def cmd_bench(args) -> int:
    from .commands import bench

    _threads(args.threads)
    return bench(args)


def cmd_serve(args) -> int:
    from .serve import run

    _threads(args.threads)
    run(args.host, args.port, args.models or available_models(),
        {"max_upload_bytes": args.max_upload_mb * 1024**2,
         "max_pixels": args.max_megapixels * 1_000_000, "workers": args.workers,
         "queue": args.queue, "keep_seconds": 60.0 * args.keep_minutes})
    return 0


def cmd_export(args) -> int:
    from .commands import export_model

    _threads(args.threads)
    return export_model(args)


def cmd_models(args) -> int:
    """The shipped models from their files' headers (``zoo.summary``: no weights loaded, no
    torch imported): the default and aliases marked, scores and the 128->512 latency their
    cards measured, and the input they were trained for."""
    del args
    print("| name | method | scale | params | Set5 / Set14 / B100 PSNR-Y | 128->512 ms "
          "| trained for |")
    print("| --- | --- | ---: | ---: | --- | ---: | --- |")
    for name in available_models():
        row = summary(name)
        label = name + (" (default)" if row["default"] else "")
        label += "".join(f" (alias: {a})" for a in row["aliases"])
        psnr = " / ".join(f"{v:.2f}" for v in row["psnr"].values()) or "-"
        ms = row["latency_ms"]
        timed = "-" if ms is None else f"{ms:.0f} ({row['latency_threads']} threads)"
        print(f"| {label} | {row['method']} | x{row['scale']} | {row['params']:,} | {psnr} | "
              f"{timed} | {row['trained_for']} |")
    return 0


def cmd_train(args) -> int:
    import torch

    from .train.run import run

    out = args.out or Path("runs") / args.config.stem
    path = run(args.config, out, torch.device(args.device), args.stage, args.resume, args.stop_at,
               args.overrides)
    if path is not None:
        print(f"model written to {path}")
    return 0


def _threads(n: int | None) -> None:
    """Set torch's threads (if given) and keep large freed buffers in the heap."""
    keep_freed_buffers()
    if n:
        import torch

        torch.set_num_threads(n)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h
MMAP_THRESHOLD = 1 << 30


def keep_freed_buffers() -> bool:
    """Ask glibc's malloc to serve buffers up to 1 GiB from the heap, and to keep up to 1 GiB
    of freed memory for reuse instead of returning it to the kernel.

    By default glibc maps every allocation over 32 MiB afresh and unmaps it when freed, and
    trims the heap whenever 128 KiB are free at its top, so each tile's activations are
    zeroed page by page by the kernel again: the latent models spent as much time in the
    kernel as in their own code (edgesdsr-x4's fast stack on Set14: 9.1 s of system time in
    an 11.1 s evaluation, 1.0 s in 6.6 s with both settings; benchmarks/results/
    large_images.md). Not on other C libraries, nor when the user set
    ``FASTDIFFSR_MALLOC=system``. Returns whether set."""
    import ctypes
    import os
    import platform

    if os.environ.get("FASTDIFFSR_MALLOC") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    mapped = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed = libc.mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD)  # keep up to 1 GiB free on top
    return bool(mapped and trimmed)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastdiffsr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_upscale(sub)
    _add_eval(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_export(sub)
    _add_serve(sub)
    sub.add_parser("models", help="list the shipped models")
    return parser


HANDLERS = {"upscale": cmd_upscale, "eval": cmd_eval, "train": cmd_train, "bench": cmd_bench,
            "export": cmd_export, "serve": cmd_serve, "models": cmd_models}


def check_paths(args) -> None:
    """The checks argparse cannot make alone, before any model is loaded or file written."""
    if args.command == "upscale":
        if not args.input.exists():
            raise UsageError(f"argument -i/--input: not found: {args.input}")
        _check_writable_folder(args.output, "-o/--output")
        if args.tile and args.tile_overlap is not None and 2 * args.tile_overlap > args.tile:
            raise UsageError(f"argument --tile-overlap: must be at most half the tile "
                             f"({args.tile}), got {args.tile_overlap}")
    elif args.command == "eval":
        if not args.data.is_dir():
            raise UsageError(f"argument --data: not a folder: {args.data}")
        if args.write_lr is not None:
            if args.degradation is None:
                raise UsageError("argument --write-lr: needs --degradation")
            _check_writable_folder(args.write_lr, "--write-lr")
    elif args.command == "train" and not args.config.is_file():
        raise UsageError(f"argument config: not a file: {args.config}")
    elif args.command == "export":
        if args.output.suffix.lower() not in (".onnx", ".pte"):
            raise UsageError(f"argument -o/--output: must end in .onnx or .pte, "
                             f"got {args.output}")
        _check_writable_folder(args.output.parent, "-o/--output")
        if args.dtype == "int8" and not args.calibration.is_dir():
            raise UsageError(f"argument --calibration: not a folder: {args.calibration}")


def _check_writable_folder(folder: Path, flag: str) -> None:
    """``folder`` is a folder, or can be made: its nearest existing ancestor is a writable
    folder."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"argument {flag}: not a folder: {folder}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"argument {flag}: cannot write in {existing}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"fastdiffsr {args.command}"
    try:
        check_paths(args)
        if getattr(args, "device", "cpu").startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UsageError("--device cuda asked for, but torch sees no CUDA device")
        return HANDLERS[args.command](args)
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
