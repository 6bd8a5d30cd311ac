"""The ``fastdiffsr`` command: upscale | eval | train | bench | export | models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .backends.onnx import DeployError
from .config import ConfigError
from .imageio import ImageReadError
from .zoo import DEFAULT_MODEL, ModelFileError

# Errors that are the user's input, not a bug: one line on stderr, exit status 2, no traceback.
USER_ERRORS = (ModelFileError, ImageReadError, ConfigError, FileNotFoundError, DeployError)

DEFAULT_BENCH_DATA = Path("../shared/data/bench")


def _add_sampling_steps(p) -> None:
    p.add_argument("--sampling-steps", "--steps", type=int, dest="sampling_steps",
                   help="diffusion sampling steps (default: the model's)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: convolutions and matmuls in bfloat16 (PyTorch models)")


def _add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="upscale an image or a folder of images")
    p.add_argument("-i", "--input", required=True, type=Path, help="image file or folder")
    p.add_argument("-o", "--output", type=Path, default=Path("results"), help="output folder")
    p.add_argument("-n", "--model", default=DEFAULT_MODEL, help="model name or .safetensors")
    p.add_argument("-s", "--outscale", type=float, help="final scale (default: the model's)")
    p.add_argument("--tile", type=int,
                   help="LR tile side, 0 for the whole image (default: from a memory budget)")
    p.add_argument("--tile-overlap", type=int, help="LR overlap (default: the model's)")
    _add_sampling_steps(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp"])
    p.add_argument("--suffix", default="out", help="output name suffix ('' for none)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM-Y on benchmark sets (the literature's protocol)")
    p.add_argument("-n", "--model", default=DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=DEFAULT_BENCH_DATA)
    p.add_argument("--sets", default="Set5,Set14,B100")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--report", type=Path, help="folder for report.md, results.json, crops")
    _add_sampling_steps(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unfused", action="store_true", help="evaluate the training form")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency, peak memory, params and FLOPs")
    p.add_argument("-n", "--model", default=DEFAULT_MODEL,
                   help="shipped name, weights file, or a training config .toml (random weights)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="128,512", help="LR sides to time")
    _add_sampling_steps(p)
    p.add_argument("--unfused", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a method's stages from a TOML config")
    p.add_argument("config", type=Path)
    p.add_argument("--stage", help="run only this stage (default: every unfinished stage)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/<stage>/last.ckpt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="output folder (default runs/<config name>)")
    p.add_argument("--stop-at", type=int, metavar="ITERATION",
                   help="stop after this training iteration (resume later)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.conditioning=concat "
                        "--set teacher_x2.iterations=400 (repeatable; recorded in the model "
                        "file; a relative path resolves against the config file's folder)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32 or int8) for deployment")
    p.add_argument("-n", "--model", default=DEFAULT_MODEL, help="model name or .safetensors")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--tile", type=int, default=128,
                   help="LR side the graph is traced and calibrated at (any size runs)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--calibration", type=Path, default=Path("../shared/data/train"),
                   help="training images for int8 calibration (never a benchmark set)")
    p.add_argument("--threads", type=int)


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


def cmd_export(args) -> int:
    from .commands import export_model

    _threads(args.threads)
    return export_model(args)


def cmd_models(args) -> int:
    from .commands import list_models

    del args
    return list_models()


def cmd_train(args) -> int:
    from .train.run import run

    out = args.out or Path("runs") / args.config.stem
    path = run(args.config, out, torch.device(args.device), args.stage, args.resume, args.stop_at,
               args.overrides)
    if path is not None:
        print(f"model written to {path}")
    return 0


def _threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdiffsr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_upscale(sub)
    _add_eval(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_export(sub)
    sub.add_parser("models", help="list the shipped models")
    return parser


HANDLERS = {"upscale": cmd_upscale, "eval": cmd_eval, "train": cmd_train, "bench": cmd_bench,
            "export": cmd_export, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        print("fastdiffsr: error: --device cuda asked for, but torch sees no CUDA device",
              file=sys.stderr)
        return 2
    try:
        return HANDLERS[args.command](args)
    except USER_ERRORS as e:
        print(f"fastdiffsr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
