"""Large images through the CLI path (read -> upscale -> write): peak memory, wall, user and
system time of one ``fastdiffsr upscale`` per (model, size, tile, malloc setting), each in a
fresh process, and which tile is the fastest. The output alone of 4096 x 2160 -> 16384 x 8640
is 425 MB in 8 bits (1.7 GB in float32, which the CLI no longer holds: rows are quantized as
the tiles finish).

Malloc settings: ``default`` (the CLI's: glibc serves buffers up to 1 GiB from its heap and
keeps up to 1 GiB freed for reuse, ``cli.keep_freed_buffers``), ``system`` (glibc's own:
buffers over 32 MiB mapped afresh each time, the heap trimmed at 128 KiB free).

    .venv/bin/python benchmarks/large_images.py --threads 2 \\
        --case yonos-x4:512x400::default,system --case bicubic:4096x2160 \\
        --case rdsr-x4:4096x2160 --case rdsr-x4:2048x2048:128,192,384,512

writes ``benchmarks/results/large_images.md`` (rows as they finish).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def photo(path: Path, width: int, height: int) -> Path:
    """A smooth random test picture (JPEG, like a photo) of width x height."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(path,
                                                                                   quality=90)
    return path


CHILD = ("import resource, sys; from fastdiffsr.cli import main; code = main(sys.argv[1:]); "
         "r = resource.getrusage(resource.RUSAGE_SELF); "
         "print('USAGE', r.ru_utime, r.ru_stime, r.ru_maxrss); sys.exit(code)")
MALLOC = {"default": {}, "system": {"FASTDIFFSR_MALLOC": "system"}}


def run_case(model: str, src: Path, tile: str | None, threads: int, out: Path,
             malloc: str = "default") -> tuple[float, float, float, float]:
    """(wall s, user s, system s, peak RSS MB) of one ``fastdiffsr upscale`` in a child
    process."""
    cmd = [sys.executable, "-c", CHILD, "upscale", "-i", str(src), "-o", str(out), "-n", model,
           "--threads", str(threads), "--quiet", "--overwrite"]
    if tile is not None:
        cmd += ["--tile", tile]
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env={**os.environ, **MALLOC[malloc]})
    seconds = time.perf_counter() - start
    user, system, peak_kb = map(float, done.stdout.split("USAGE")[-1].split())
    return seconds, user, system, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", required=True,
                        metavar="MODEL:WxH[:TILES[:MALLOCS]]", help="TILES: comma-separated "
                        "--tile values to time besides the default; MALLOCS: this case's malloc "
                        "settings (default: --malloc) (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", default="default", help="comma-separated settings of "
                        f"{', '.join(MALLOC)}")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "large_images.md")
    args = parser.parse_args()
    lines = ["# Large images: memory and time of one upscale", "",
             f"`benchmarks/large_images.py` on {platform.processor() or platform.machine()}, "
             f"{args.threads} threads: `fastdiffsr upscale` on a JPEG, each run in a fresh "
             "process, nothing else running; its wall time, CPU time in user code and in the "
             "kernel, and peak RSS (ru_maxrss; torch and the model included).", "",
             "| model | input | tile | malloc | seconds | user s | system s | peak RSS (MB) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.case:
            model, size, *rest = case.split(":")
            width, height = map(int, size.split("x"))
            src = photo(Path(tmp) / f"photo_{size}.jpg", width, height)
            tiles = rest[0].split(",") if rest and rest[0] else []
            mallocs = (rest[1] if len(rest) > 1 else args.malloc).split(",")
            for tile in [None, *tiles]:
                for malloc in mallocs:
                    seconds, user, system, peak = run_case(model, src, tile, args.threads,
                                                           Path(tmp) / "out", malloc)
                    lines.append(f"| {model} | {size} | {tile or 'default'} | {malloc} | "
                                 f"{seconds:.1f} | {user:.1f} | {system:.1f} | {peak:.0f} |")
                args.out.write_text("\n".join(lines) + "\n")
                print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
