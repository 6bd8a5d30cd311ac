"""Ship a trained model: evaluate it, time it, copy it into the package with its scores in the
provenance, and write its model card next to it.

    .venv/bin/python benchmarks/ship_model.py runs/rdsr-x4/rdsr-x4.safetensors \
        --run runs/rdsr-x4 --data ../shared/data/bench --threads 2 [--notes notes.md]

``--notes`` appends a hand-written section (ablations, caveats) to the generated card.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fastdiffsr.bench import fresh_process_peak_mb, matmul_gflops, time_upscale
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.upscaler import count_params
from fastdiffsr.zoo import WEIGHTS_DIR, load_model, read_metadata

SETS = ("Set5", "Set14", "B100")


def measure(path: Path, data: Path, threads: int, sizes: list[int], repeats: int) -> dict:
    """Scores on the benchmark sets and latency (median of ``repeats``) of LR ``sizes`` on
    ``threads`` threads, deployed form."""
    torch.set_num_threads(threads)
    model = load_model(path)
    scores = {}
    for name in SETS:
        r, _ = evaluate_set(model, data, name)
        scores[name] = {"psnr": round(r.psnr, 3), "ssim": round(r.ssim, 4), "images": r.images}
    timings = {f"{t.lr_side}->{t.lr_side * model.scale}": {
        "latency_ms": round(t.latency_s * 1e3, 1), "gflops": round(t.flops / 1e9, 2),
        "tiles": t.tiles, "sampling_steps": t.sampling_steps,
        "peak_rss_mb": round(fresh_process_peak_mb(str(path), t.lr_side, threads=threads))}
        for t in (time_upscale(model, s, repeats) for s in sizes)}
    return {"scores": scores, "latency": {"threads": threads, "cpu": platform.processor(),
                                          "matmul_gflops": round(matmul_gflops()), **timings},
            "params_deployed": count_params(model),
            "default_sampling_steps": model.default_sampling_steps,
            "params_training_form": count_params(load_model(path, deploy=False))}


def validation_history(run: Path) -> dict[str, list]:
    """(iteration, held-out PSNR) per stage from the run's logs."""
    out = {}
    for log in sorted(run.glob("*/log.jsonl")):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        out[log.parent.name] = [(r["iteration"], round(r["val_psnr"], 3)) for r in rows
                                if "val_psnr" in r]
    return out


def write_weights(src: Path, dst: Path, provenance: dict) -> None:
    meta = read_metadata(src)
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, dst, metadata={**meta, "provenance": json.dumps(provenance)})


def model_card(name: str, prov: dict, size: int, notes: str) -> str:
    s, lat = prov["scores"], prov["latency"]
    stages = "\n".join(f"| {k} | {v['iterations']} | {v['wall_seconds'] / 60:.1f} min |"
                       for k, v in prov["stages"].items())
    scores = "\n".join(f"| {k} | {v['images']} | {v['psnr']:.2f} | {v['ssim']:.4f} |"
                       for k, v in s.items())
    val = "\n".join(f"- {k}: " + ", ".join(f"{st}: {p:.2f} dB" for st, p in v)
                    for k, v in prov["validation"].items())
    lat_rows = "\n".join(
        f"| {k} | {v['tiles']} | {v['latency_ms']} | "
        f"{round(v['latency_ms'] / v['sampling_steps'], 1) if v['sampling_steps'] else ''} | "
        f"{v['gflops']} | "
        f"{v['peak_rss_mb']} |" for k, v in lat.items() if "->" in k)
    params = f"{prov['params_deployed']:,} parameters"
    if prov["params_training_form"] != prov["params_deployed"]:
        params += f" deployed ({prov['params_training_form']:,} in the training form)"
    steps = prov.get("default_sampling_steps") or 0
    at_steps = f", {steps} sampling step{'s' * (steps > 1)} (the default)" if steps else ""
    return f"""# {name}

Method `{prov['method']}`; x{prov['recipe']['model']['scale']}. File
`{name}.safetensors`, {size / 1024:.0f} KiB; {params}.

## Training

- Command: `{prov['command']}` (config `{prov['config_file']}`)
- Hardware: {prov['hardware']}; torch {prov['torch']}; world size {prov['world_size']}
- Data: `../shared/data/train` (291 images) minus the held-out validation images; images smaller
  than the HR patch are skipped (see the run's `log.jsonl`)

| stage | iterations | wall time |
| --- | ---: | ---: |
{stages}

Held-out validation PSNR-Y (EMA weights) during training:
{val}

## Scores (x4, official LR, Y channel, 4 px border crop{at_steps})

`fastdiffsr eval -n {name} --sets Set5,Set14,B100`

| set | images | PSNR-Y (dB) | SSIM-Y |
| --- | ---: | ---: | ---: |
{scores}

## Latency

`fastdiffsr bench -n {name} --threads {lat['threads']}` ({lat['threads']} threads,
{lat['cpu'] or 'CPU'}, measured matmul rate {lat['matmul_gflops']} GFLOP/s; the whole
upscale, per-image work included)

| input -> output | tiles | ms | ms per sampling step | GFLOPs | peak RSS rise (MB) |
| --- | ---: | ---: | ---: | ---: | ---: |
{lat_rows}
{notes}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the training output folder")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--notes", type=Path, help="markdown appended to the model card")
    parser.add_argument("--sizes", default="128,512", help="LR sides to time")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size")
    parser.add_argument("--name", help="ship under this name (default: the config's), e.g. a "
                        "new version replacing a shipped model")
    args = parser.parse_args()
    meta = read_metadata(args.model)
    prov = {**json.loads(meta["provenance"]), "method": meta["method"]}
    sizes = [int(x) for x in args.sizes.split(",")]
    prov.update(measure(args.model, args.data, args.threads, sizes, args.repeats))
    prov["validation"] = validation_history(args.run)
    name = prov["name"] = args.name or prov["name"]
    dst = WEIGHTS_DIR / f"{name}.safetensors"
    write_weights(args.model, dst, prov)
    notes = "\n" + args.notes.read_text() if args.notes else ""
    card = model_card(name, prov, dst.stat().st_size, notes)
    (WEIGHTS_DIR / f"{name}.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
