"""Fuzz ``read_image`` at length: generated and mutated files of every format
(``tests/imagegen.py``, larger than the unit test's), each read in a worker process that
reports its time and peak memory. A file that takes longer than ``--timeout`` is a hang (the
worker is killed and a new one takes the next file). Failures (anything but the clean
``ImageReadError``), hangs and the slowest files are reported; failures and hangs are copied
under ``--keep`` for ``tests/corpus``.

    .venv/bin/python benchmarks/fuzz.py --files 5000 --seed 1 --keep runs/fuzz

writes ``benchmarks/results/fuzz.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.imagegen import KINDS, MUTATIONS, SUFFIX, encode, mutate  # noqa: E402

WORKER = """
import json, resource, sys, time
from fastdiffsr.imageio import ImageReadError, read_image
for line in sys.stdin:
    path = line.strip()
    t0 = time.perf_counter()
    try:
        pic = read_image(path)
        outcome = f"ok {pic.width}x{pic.height}"
    except ImageReadError:
        outcome = "clean error"
    except BaseException as e:
        outcome = f"FAILURE {type(e).__name__}: {e}"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"path": path, "outcome": outcome, "seconds": time.perf_counter() - t0,
                      "peak_mb": rss}), flush=True)
"""


def generate(folder: Path, n: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        kind, mutation = rng.choice(KINDS), rng.choice(MUTATIONS)
        h, w = rng.randint(1, 300), rng.randint(1, 300)
        data = mutate(encode(kind, h, w, rng.randrange(2**31)), mutation, rng.randrange(2**31))
        path = folder / f"{i:06d}_{kind[0]}_{kind[1].replace(';', '')}_{mutation}{SUFFIX[kind[0]]}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def run_worker(paths: list[Path], timeout: float) -> list[dict]:
    """Read every path in worker processes; a read over ``timeout`` seconds is a hang."""
    results, todo = [], list(paths)
    while todo:
        proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        while todo:
            path = todo.pop(0)
            proc.stdin.write(f"{path}\n")
            proc.stdin.flush()
            line = _readline(proc, timeout)
            if line is None:
                proc.kill()
                proc.wait()
                results.append({"path": str(path), "outcome": "HANG", "seconds": timeout,
                                "peak_mb": None})
                break
            results.append(json.loads(line))
        else:
            proc.stdin.close()
            proc.wait()
    return results


def _readline(proc: subprocess.Popen, timeout: float) -> str | None:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per file")
    parser.add_argument("--keep", type=Path, help="copy failures and hangs here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = run_worker(generate(Path(tmp), args.files, args.seed), args.timeout)
        bad = [r for r in results if r["outcome"].startswith(("FAILURE", "HANG"))]
        if args.keep and bad:
            args.keep.mkdir(parents=True, exist_ok=True)
            for r in bad:
                Path(args.keep, Path(r["path"]).name).write_bytes(Path(r["path"]).read_bytes())
        wall = time.perf_counter() - start
    counts: dict[str, int] = {}
    for r in results:
        key = r["outcome"].split(" ")[0] if not r["outcome"].startswith("clean") else "clean error"
        counts[key] = counts.get(key, 0) + 1
    slowest = sorted(results, key=lambda r: -r["seconds"])[:5]
    peak = max((r["peak_mb"] or 0) for r in results)
    lines = ["# Fuzzing read_image", "",
             f"`benchmarks/fuzz.py --files {args.files} --seed {args.seed} --timeout "
             f"{args.timeout}`: {len(results)} files ({len(KINDS)} kinds x {len(MUTATIONS)} "
             f"mutations, 1-300 px sides), {wall:.0f} s.", "",
             "| outcome | files |", "| --- | ---: |",
             *(f"| {k} | {v} |" for k, v in sorted(counts.items())), "",
             f"Peak memory of a reading process: {peak:.0f} MB. Slowest reads:", "",
             *(f"- {Path(r['path']).name}: {r['seconds']:.3f} s, {r['outcome']}" for r in slowest),
             "", "Failures and hangs:" if bad else "No failures, no hangs.",
             *(f"- {Path(r['path']).name}: {r['outcome']}" for r in bad), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
