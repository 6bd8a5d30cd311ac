"""One training stage, read top to bottom: data, AdamW, warm-up + cosine, clipping, EMA,
validation, checkpoint/exact resume, JSONL log and a PNG plot; DDP under ``torchrun``.

A stage module is an ``nn.Module`` with ``forward(lr, hr) -> (loss, logs)`` and
``validation_sr(lr, hr) -> sr``; optionally ``param_groups() -> list[ParamGroup]`` to train some
parameters at their own peak lr and warm-up (e.g. Edge-SD-SR's LR encoder). Randomness inside
an iteration (e.g. diffusion noise) comes from the global torch RNG, reseeded at every
iteration from (seed, iteration, rank): the checkpointed iteration therefore fixes the RNG
state, and a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import PATH
from ..data.datasets import (
    DEGRADATIONS,
    HRPatches,
    IterationSampler,
    PatchSpec,
    list_images,
    load_pair,
    split_holdout,
)
from ..metrics import psnr_y
from ..resize import imresize
from .checkpoints import Checkpoint


@dataclass(frozen=True)
class TrainConfig:
    """One stage's training; every count is in training iterations (optimizer updates)."""

    iterations: int = 1000
    batch_size: int = 16  # per process
    lr_patch: int = 48  # LR crop side
    lr: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every: int = 500
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    workers: int = 1
    # HR training images; written in a config it is relative to the config file, this default
    # is relative to the working directory (the repository root, beside ../shared)
    data: str = field(default="../shared/data/train", metadata=PATH)
    holdout: int = 5  # images held out of ``data`` for validation
    # how the LR of a training pair is made from its HR crop: "bicubic" (the benchmarks'
    # clean downscale) or a real-world degradation (data.datasets.DEGRADATIONS); the held-out
    # images get the same, seeded by their index
    degradation: str = "bicubic"

    def __post_init__(self) -> None:
        """Every field in its range (ValueError naming it): a typo fails before training."""
        checks = {
            "iterations": self.iterations >= 0, "batch_size": self.batch_size >= 1,
            "lr_patch": self.lr_patch >= 1, "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "warmup": self.warmup >= 0, "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": math.isfinite(self.grad_clip) and self.grad_clip > 0,
            "ema_decay": 0 <= self.ema_decay < 1, "val_every": self.val_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 1, "log_every": self.log_every >= 1,
            "seed": 0 <= self.seed < 2**63, "workers": self.workers >= 0,
            "holdout": self.holdout >= 0, "degradation": self.degradation in DEGRADATIONS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{n} = {getattr(self, n)!r}" for n in bad)
            raise ValueError(f"out of range: {values} (counts >= 1, iterations / warmup >= 0, "
                             "lr > 0, decays in [0, 1), degradation one of "
                             f"{', '.join(DEGRADATIONS)})")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``cfg.iterations``."""
    if iteration < cfg.warmup:
        return (iteration + 1) / cfg.warmup
    progress = (iteration - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ParamGroup:
    """Parameters with their own peak ``lr`` and ``warmup`` (None: the stage's), then the
    stage's cosine decay; groups after the first are logged as ``lr_1``, ``lr_2``, ..."""

    params: list[nn.Parameter]
    lr: float | None = None
    warmup: int | None = None


def param_groups(module: nn.Module) -> list[ParamGroup]:
    """The module's ``param_groups()``, which must list each trainable parameter once, else
    one group of every trainable parameter."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not hasattr(module, "param_groups"):
        return [ParamGroup(trainable)]
    groups = module.param_groups()
    listed = [id(p) for g in groups for p in g.params]
    if len(listed) != len(trainable) or set(listed) != {id(p) for p in trainable}:
        raise ValueError(f"{type(module).__name__}.param_groups() must list each trainable "
                         "parameter exactly once")
    return groups


def optimizer(groups: list[ParamGroup], cfg: TrainConfig):
    """AdamW over the groups and its LambdaLR: per group, ``lr_factor`` with the group's warm-up."""
    opt = torch.optim.AdamW([{"params": g.params, "lr": cfg.lr if g.lr is None else g.lr}
                             for g in groups], lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay)
    schedules = [cfg if g.warmup is None else replace(cfg, warmup=g.warmup) for g in groups]
    factors = [lambda s, c=c: lr_factor(s, c) for c in schedules]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factors)


def ema_decay(iteration: int, cfg: TrainConfig) -> float:
    """Warmed-up EMA decay min(decay, (1 + i) / (10 + i)) at iteration i: early averages forget
    the init."""
    return min(cfg.ema_decay, (1 + iteration) / (10 + iteration))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for trainable parameters; buffers copied."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        if pm.requires_grad:
            pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


@torch.no_grad()
def validate(module: nn.Module, pairs: list[tuple[Tensor, Tensor]], scale: int) -> float:
    """Mean PSNR-Y (the eval protocol) of ``module.validation_sr`` over held-out pairs."""
    module.eval()
    scores = [psnr_y(module.validation_sr(lr, hr), hr, scale).item() for lr, hr in pairs]
    module.train()
    return sum(scores) / len(scores)


def bicubic_psnr(pairs: list[tuple[Tensor, Tensor]], scale: int) -> float | None:
    """The held-out set's bicubic PSNR-Y: the baseline the validation curve should beat."""
    if not pairs:
        return None
    scores = [psnr_y(imresize(lr, scale).clamp(0, 1), hr, scale).item() for lr, hr in pairs]
    return sum(scores) / len(scores)


class RunLog:
    """Append-only JSONL log plus a PNG plot of loss and validation PSNR."""

    def __init__(self, folder: Path):
        self.path, self.plot_path = folder / "log.jsonl", folder / "curves.png"

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in self.path.read_text().splitlines()]
        train = [r for r in rows if "loss" in r]
        val = [r for r in rows if "val_psnr" in r]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot([r["iteration"] for r in train], [r["loss"] for r in train])
        a.set(xlabel="iteration", ylabel="loss", yscale="log", title="training loss")
        b.plot([r["iteration"] for r in val], [r["val_psnr"] for r in val], "o-")
        b.set(xlabel="iteration", ylabel="PSNR-Y (dB)", title="held-out validation")
        fig.tight_layout()
        fig.savefig(self.plot_path)
        plt.close(fig)


def train_stage(
    make_module: Callable[[], nn.Module],
    cfg: TrainConfig,
    scale: int,
    folder: Path,
    device: torch.device,
    resume: bool = False,
    stop_at: int | None = None,
) -> tuple[nn.Module, float]:
    """Train one stage into ``folder``; returns (EMA module, training seconds incl. resumes)."""
    info = init_distributed(device)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = make_module().to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    if cfg.iterations == 0:  # the stage is its initialisation (e.g. an autoencoder copied in)
        return ema, 0.0
    groups = param_groups(model)
    trainable = [p for g in groups for p in g.params]
    opt, sched = optimizer(groups, cfg)
    ckpt, log = Checkpoint(folder), RunLog(folder)
    resuming = resume and ckpt.path.exists()
    start, spent = ckpt.load(model, ema, opt, sched, device) if resuming else (0, 0.0)
    wrapped = DistributedDataParallel(model) if info.world > 1 else model

    files, held_out = split_holdout(list_images(cfg.data), cfg.holdout)
    val_pairs = [tuple(t.to(device) for t in load_pair(f, None, scale, cfg.degradation, index))
                 for index, f in enumerate(held_out)]
    data = HRPatches(files, PatchSpec(cfg.lr_patch, scale, cfg.seed, cfg.degradation))
    if info.main:
        log.write({"iteration": start, "train_images": len(data.files),
                   "skipped_small": data.skipped, "held_out": [str(f) for f in held_out],
                   "world_size": info.world, "val_bicubic_psnr": bicubic_psnr(val_pairs, scale)})
    sampler = IterationSampler(start, cfg.iterations, cfg.batch_size, info.rank, info.world)
    loader = DataLoader(data, cfg.batch_size, sampler=sampler, num_workers=cfg.workers)

    end = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
    bar = tqdm(total=end, initial=start, disable=not info.main, desc=folder.name, unit="it")
    t0, it = time.time() - spent, start  # log times are training seconds across resumes
    for lr_img, hr_img in loader:
        if it >= end:
            break
        torch.manual_seed(cfg.seed + 7919 * it + 104729 * info.rank)
        loss, logs = wrapped(lr_img.to(device), hr_img.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        sched.step()
        ema_update(ema, model, ema_decay(it, cfg))
        it += 1
        bar.update(1)
        last = it == end
        if info.main and (it % cfg.log_every == 0 or last):
            lrs = sched.get_last_lr()
            record = {"iteration": it, "loss": loss.item(), "lr": lrs[0],
                      "grad_norm": float(grad_norm), "time": round(time.time() - t0, 1)}
            record.update({f"lr_{i}": lr for i, lr in enumerate(lrs[1:], 1)})
            record.update({k: v.item() for k, v in logs.items()})
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if info.main and val_pairs and (it % cfg.val_every == 0 or last):
            score = validate(ema, val_pairs, scale)
            log.write({"iteration": it, "val_psnr": score, "time": round(time.time() - t0, 1)})
            bar.write(f"iteration {it}: held-out PSNR-Y {score:.3f} dB")
            log.plot()
        if it % cfg.checkpoint_every == 0 or last:
            if info.main:
                ckpt.save(it, time.time() - t0, model, ema, opt, sched)
            if info.world > 1:
                dist.barrier()
    bar.close()
    return ema, time.time() - t0
