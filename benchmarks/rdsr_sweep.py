"""RDSR quality against latency (issue 25): a sweep of the deployed form's width and depth, each
point trained by ``configs/rdsr/x4.toml``'s recipe at one reduced budget, then scored and timed
in one run beside bicubic and today's ``rdsr-x4``.

    .venv/bin/python benchmarks/rdsr_sweep.py latency --threads 2   # untrained: cost only
    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/rdsr_sweep.py train > runs/sweep.log &
    .venv/bin/python benchmarks/rdsr_sweep.py table --threads 2

``train [POINT ...]`` trains the named points (default: every point) that have not finished, one
after another, into ``runs/rdsr-sweep/<point>`` with ``--resume``: run it again after an
interruption and it goes on where it stopped (exactly). ``latency`` writes
``benchmarks/results/rdsr_sweep_latency.md`` (fp32 and bf16 at 128->512 of each point's deployed
form, random weights: no training needed). ``table`` writes ``benchmarks/results/rdsr_pareto.md``
and ``rdsr_pareto.png``: PSNR-Y on Set5 and B100 against the 128->512 latency in fp32 and bf16,
measured in one run (every trained point, the ones that lost too; a point's scores are kept in
``rdsr_sweep_scores.json`` once its run folder is gone), and against parameters with the
literature's light models placed by their published x4 scores and parameter counts (their
latency here is unknown: no weights can be downloaded).

Before the sweep, the recipe: ``recipes [VARIANT ...]`` trains today's rdsr-x4 size (c48-b10) at
the same budget once per named recipe variant (default: every one) into
``runs/rdsr-recipe/<variant>``, and ``recipe-table`` writes ``benchmarks/results/rdsr_recipe.md``,
each variant's held-out PSNR-Y through training (the training folder's held-out images only: the
benchmarks play no part in choosing; a variant's rows are kept in ``rdsr_recipe_scores.json``
once its run folder is gone). The sweep's points are trained with ``RECIPE``, the variant chosen
there.

    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/rdsr_sweep.py recipes > runs/recipes.log &
    .venv/bin/python benchmarks/rdsr_sweep.py recipe-table
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from ship_model import validation_history  # noqa: E402  (benchmarks/, the script's folder)

from fastdiffsr.bench import time_upscale  # noqa: E402
from fastdiffsr.data.datasets import list_images, load_pair, split_holdout  # noqa: E402
from fastdiffsr.evaluation import evaluate_set  # noqa: E402
from fastdiffsr.methods.rdsr import RDSR  # noqa: E402
from fastdiffsr.train.run import load_recipe  # noqa: E402
from fastdiffsr.train.trainer import TrainConfig  # noqa: E402
from fastdiffsr.upscaler import UpscaleOptions, count_params  # noqa: E402
from fastdiffsr.zoo import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rdsr" / "x4.toml"
RUNS = ROOT / "runs" / "rdsr-sweep"
SETS = ("Set5", "B100")
# the sweep's budget: a third of x4.toml's prior stage, its diffusion stage shortened alike
BUDGET = ("prior.iterations=3000", "prior.val_every=1000", "diffusion.iterations=1000")
RECIPE_RUNS = ROOT / "runs" / "rdsr-recipe"
# variant: its overrides of x4.toml. "x4.toml" is today's recipe; the c32-b8 sweep point died
# under it (every unit of its last block dead at the first validation, the output the skip)
RECIPE_VARIANTS = {
    "x4.toml": (),
    "leaky ReLU 0.1": ("model.negative_slope=0.1",),
    "zero tail": ("zero_init_tail=true",),
    "zero tail + leaky ReLU 0.1": ("zero_init_tail=true", "model.negative_slope=0.1"),
    # the light-SR recipe's L1 then L2: the diffusion stage fine-tunes RepD
    "zero tail + L2 fine-tune": ("zero_init_tail=true", 'diffusion_sr_loss="l2"'),
    # 256 px HR crops: 72 of the 291 images are smaller and drop out (51 at 192 px)
    "zero tail + patch 64": ("zero_init_tail=true", "prior.lr_patch=64",
                             "diffusion.lr_patch=64"),
}
RECIPE = RECIPE_VARIANTS["zero tail"]
POINTS = {  # name: (RepD width C, FiLM blocks); c48-b10 is today's rdsr-x4 at the sweep budget
    "c32-b8": (32, 8),
    "c48-b10": (48, 10),
    "c48-b16": (48, 16),
    "c64-b10": (64, 10),
    "c64-b16": (64, 16),
}
# published x4 PSNR-Y (Set5, B100), parameters and training images: the three, and the
# light models trained on the same 291 images as ours (LapSRN, DRRN, MemNet; the last two run
# 52 and 80 layers at the HR size on the bicubic upscale)
LITERATURE = {"FSRCNN": (30.72, 26.98, 12_000, "91 + General-100"),
              "VDSR": (31.35, 27.29, 665_000, "291"),
              "LapSRN": (31.54, 27.32, 813_000, "291"),
              "DRRN": (31.68, 27.38, 297_000, "291"),
              "MemNet": (31.74, 27.40, 677_000, "291"),
              "IMDN": (32.21, 27.56, 715_000, "DIV2K")}
BARS = {"Set5": 31.6, "B100": 27.4}  # the check on rdsr-x4


def overrides(point: str) -> list[str]:
    channels, blocks = POINTS[point]
    return [*BUDGET, *RECIPE, f"model.channels={channels}", f"model.blocks={blocks}"]


def variant_folder(variant: str) -> Path:
    return RECIPE_RUNS / variant.replace(" + ", "+").replace(" ", "-")


def deployed_untrained(point: str) -> RDSR:
    _, _, recipe = load_recipe(CONFIG, overrides(point))
    model = RDSR(recipe.model).eval()
    model.fuse()
    return model


def trained_file(run: Path) -> Path | None:
    """The run's exported model file, once its last stage has finished."""
    files = sorted(run.glob("*.safetensors"))
    return files[0] if files else None


def train_run(out: Path, sets: list[str]) -> None:
    """Train (or go on training) one run of x4.toml with these overrides, unless finished."""
    if trained_file(out):
        return
    print(f"training {out}", flush=True)
    subprocess.run([sys.executable, "-m", "fastdiffsr", "train", str(CONFIG), "--out", str(out),
                    "--resume", *(a for o in sets for a in ("--set", o))], check=True)


def train(points: list[str]) -> None:
    for point in points or POINTS:
        train_run(RUNS / point, overrides(point))


def train_recipes(variants: list[str]) -> None:
    for variant in variants or RECIPE_VARIANTS:
        train_run(variant_folder(variant), [*BUDGET, *RECIPE_VARIANTS[variant]])


def silent_channels(model: RDSR, lrs: list[torch.Tensor]) -> tuple[int, int]:
    """(channels whose activation is never positive on any of these images, channels): over
    the head's and every block's output in the deployed body. Under a ReLU such a channel is
    dead (no gradient reaches it); under a leaky ReLU it still passes a slope."""
    seen: list[torch.Tensor] = []
    for lr in lrs:
        x, active = lr, []
        with torch.no_grad():
            for layer in model.prepare(lr).body:
                x = layer(x)
                if not isinstance(layer, torch.nn.Conv2d):
                    active.append(x.amax(dim=(0, 2, 3)) > 0)
        seen = [a | b for a, b in zip(seen, active, strict=True)] if seen else active
    return sum(int((~a).sum()) for a in seen), sum(a.numel() for a in seen)


def recipe_rows(args) -> dict[str, dict]:
    """Each trained variant's validation history and silent channels: scored from its run
    folder when it is here, else from ``rdsr_recipe_scores.json`` (written here each time)."""
    path = args.results / "rdsr_recipe_scores.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    lrs: list[torch.Tensor] = []  # the held-out LRs, read once a trained file needs them
    for variant in RECIPE_VARIANTS:
        folder = variant_folder(variant)
        if history := validation_history(folder):
            file = trained_file(folder)
            if file and not lrs:
                held_out = split_holdout(list_images(TrainConfig.data), TrainConfig.holdout)[1]
                lrs = [load_pair(path, None, 4)[0] for path in held_out]
            rows[variant] = {"history": history,
                             "silent": silent_channels(load_model(file), lrs) if file else None}
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def recipe_table(args) -> None:
    lines = ["# RDSR recipe: one ingredient at a time", "",
             "`benchmarks/rdsr_sweep.py recipes` then `recipe-table`: today's rdsr-x4 size "
             f"(C 48, 10 blocks) trained by `configs/rdsr/x4.toml` with `{', '.join(BUDGET)}` "
             "and each variant's overrides; held-out PSNR-Y (dB) of the training folder's 5 "
             "held-out images (EMA weights; the prior stage scores the oracle, RepD on the HR "
             "image's prior; the diffusion stage the inference model).", ""]
    rows = recipe_rows(args)
    columns = sorted({(stage, it) for r in rows.values() for stage, v in r["history"].items()
                      for it, _ in v}, key=lambda c: (c[0] != "prior", c[1]))
    lines += ["| variant | overrides | " + " | ".join(f"{s} {i}" for s, i in columns)
              + " | silent channels |", "| --- | --- |" + " ---: |" * (len(columns) + 1)]
    for variant, sets in RECIPE_VARIANTS.items():
        row = rows.get(variant, {"history": {}, "silent": None})
        scores = {(stage, it): p for stage, v in row["history"].items() for it, p in v}
        cells = [f"{scores[c]:.3f}" if c in scores else "-" for c in columns]
        silent = "{} of {}".format(*row["silent"]) if row["silent"] else "-"
        overrides = ", ".join(f"`{o}`" for o in sets) or "-"
        lines.append(f"| {variant} | {overrides} | " + " | ".join(cells) + f" | {silent} |")
    lines += ["", "silent channels: channels of the deployed body's activations (head and "
              "blocks) never positive on the 5 held-out images; under a ReLU, dead. "
              "-: not trained (yet)."]
    (args.results / "rdsr_recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def latency_ms(model, repeats: int, dtype: str = "fp32") -> float:
    return time_upscale(model, 128, repeats, UpscaleOptions(dtype=dtype)).latency_s * 1e3


def latency_table(args) -> None:
    lines = [f"# RDSR sweep: the deployed form's cost ({args.threads} threads)", "",
             f"`benchmarks/rdsr_sweep.py latency --threads {args.threads}`, "
             f"{platform.machine()}, torch {torch.__version__}; random weights (cost only); "
             f"128->512, median of {args.repeats}.", "",
             "| point | C | blocks | params | GFLOPs | fp32 ms | bf16 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for point, (c, n) in POINTS.items():
        model = deployed_untrained(point)
        t = time_upscale(model, 128, args.repeats)
        lines.append(f"| {point} | {c} | {n} | {count_params(model):,} | {t.flops / 1e9:.1f} | "
                     f"{t.latency_s * 1e3:.1f} | {latency_ms(model, args.repeats, 'bf16'):.1f} |")
        print(lines[-1], flush=True)
    (args.results / "rdsr_sweep_latency.md").write_text("\n".join(lines) + "\n")


def held_out(point: str) -> float | None:
    """The last held-out PSNR-Y of the point's diffusion stage."""
    scores = validation_history(RUNS / point).get("diffusion")
    return scores[-1][1] if scores else None


def point_scores(args) -> dict[str, dict]:
    """Every trained point's scores: those whose run is here are scored now, the others come
    from ``rdsr_sweep_scores.json`` (written here each time: a run folder is not kept forever,
    and a point trained in an earlier session keeps its place in the table)."""
    path = args.results / "rdsr_sweep_scores.json"
    scores = json.loads(path.read_text()) if path.exists() else {}
    for point in POINTS:
        if file := trained_file(RUNS / point):
            model = load_model(str(file))
            scores[point] = {"held_out": held_out(point),
                             **{s: evaluate_set(model, args.data, s)[0].psnr for s in SETS}}
            print(point, scores[point], flush=True)
    path.write_text(json.dumps(scores, indent=1) + "\n")
    return scores


def score_rows(args) -> list[dict]:
    """bicubic, the shipped rdsr-x4 and every trained point; latency in fp32 and bf16 timed
    in this run, a point's on its deployed form (the cost depends on its shape only)."""
    rows = []
    for label, spec in [("bicubic", "bicubic"), ("rdsr-x4 (shipped, full budget)", "rdsr-x4")]:
        model = load_model(spec)
        rows.append({"label": label, "model": model, "held_out": None,
                     **{s: evaluate_set(model, args.data, s)[0].psnr for s in SETS}})
    scores = point_scores(args)
    rows += [{"label": p, "model": deployed_untrained(p), **scores[p]} for p in POINTS
             if p in scores]
    for r in rows:
        model = r.pop("model")
        r |= {"params": count_params(model), "ms": latency_ms(model, args.repeats),
              "bf16 ms": latency_ms(model, args.repeats, "bf16")}
        print(r, flush=True)
    return rows


def pareto_table(args) -> None:
    rows = score_rows(args)
    budget = ", ".join(BUDGET)
    lines = ["# RDSR sweep: quality against latency", "",
             f"`benchmarks/rdsr_sweep.py table --threads {args.threads}`; each point trained by "
             f"`configs/rdsr/x4.toml` with `{budget}`, `{', '.join(RECIPE)}` and its width "
             f"and depth; 128->512 latency on {args.threads} threads (median of "
             f"{args.repeats}, PyTorch in fp32 and under bf16 autocast), timed in one run on "
             f"{platform.machine()} (PyTorch's CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}: bf16 is native only with AVX512 "
             "and its BF16 extension); "
             "PSNR-Y on the official LRx4; held-out: the training folder's 5 held-out images "
             "at the end of training.", "",
             "| model | params | fp32 ms | bf16 ms | held-out | " + " | ".join(SETS) + " |",
             "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(SETS)]
    for r in rows:
        h = f"{r['held_out']:.2f}" if r["held_out"] is not None else "-"
        lines.append(f"| {r['label']} | {r['params']:,} | {r['ms']:.1f} | {r['bf16 ms']:.1f} | "
                     f"{h} | " + " | ".join(f"{r[s]:.2f}" for s in SETS) + " |")
    lines += ["", "Published x4 scores (Set5 / B100, parameters, training images): " + "; ".join(
        f"{k} {a:.2f} / {b:.2f}, {p:,}, {d}" for k, (a, b, p, d) in LITERATURE.items()),
        "", "The issue's bar for rdsr-x4: " + ", ".join(f"{s} {v:.2f}" for s, v in BARS.items())
        + " (dashed in the plot)."]
    (args.results / "rdsr_pareto.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.results / "rdsr_pareto.png", args.threads)


def plot(rows: list[dict], path: Path, threads: int) -> None:
    """Each set's PSNR-Y against fp32 latency, bf16 latency and parameters, one colour per
    model; the y axis spans the learned models and the published points (filled: trained on
    the 291 images, as ours), and bicubic (far below) sits on its bottom edge as a
    down-pointing marker labelled with its score; dashed: the issue's bar."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey="row")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(SETS):
        fp32, bf16, by_params = axes[i]
        published = [v[i] for v in LITERATURE.values()]
        learned = [r[s] for r in rows if r["label"] != "bicubic"] + published
        bottom, top = min(learned) - 0.2, max(learned) + 0.1
        for k, r in enumerate(rows):
            low = r[s] < bottom
            y, label = (bottom, f"{r['label']} ({r[s]:.2f}, below)") if low else (r[s], r["label"])
            marker = "v" if low else "s" if r["label"].startswith("rdsr-x4") else "o"
            for ax, x in ((fp32, r["ms"]), (bf16, r["bf16 ms"]), (by_params, r["params"])):
                if x:
                    ax.plot(x, y, marker, color=colours[k % len(colours)], clip_on=False)
                    ax.annotate(label, (x, y), fontsize=7)
        for name, (*scores, params, data) in LITERATURE.items():
            y = scores[i]
            by_params.plot(params, y, "^", color="gray", fillstyle="full" if data == "291"
                           else "none")
            by_params.annotate(f"{name} ({data})", (params, y), fontsize=7, color="gray")
        for ax in (fp32, bf16, by_params):
            ax.axhline(BARS[s], color="red", linestyle="--", linewidth=0.8)
        fp32.annotate("the issue's bar", (0.01, BARS[s]), xycoords=("axes fraction", "data"),
                      fontsize=7, color="red", va="bottom")
        fp32.set(xlabel=f"128->512 latency (ms, fp32, {threads} threads)",
                 ylabel=f"{s} PSNR-Y (dB)", ylim=(bottom, top))
        bf16.set(xlabel=f"128->512 latency (ms, bf16 autocast, {threads} threads)")
        by_params.set(xlabel="parameters (deployed)", xscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["latency", "train", "table", "recipes",
                                            "recipe-table"])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"train: these points of {', '.join(POINTS)}; recipes: these "
                             "variants (quoted) of the recipe table; in this order (default: "
                             "all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    known = RECIPE_VARIANTS if args.command == "recipes" else POINTS
    if unknown := set(args.names) - set(known):
        parser.error(f"unknown name(s): {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    torch.set_num_threads(args.threads)
    {"latency": latency_table, "train": lambda a: train(a.names), "table": pareto_table,
     "recipes": lambda a: train_recipes(a.names), "recipe-table": recipe_table}[args.command](args)


if __name__ == "__main__":
    main()
