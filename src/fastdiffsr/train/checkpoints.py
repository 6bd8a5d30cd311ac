"""Files of a training run: each finished stage's EMA weights (safetensors, never a pickle),
the resumable checkpoint of the stage in progress, and state-dict helpers.

Both are written to a temporary file and renamed into place, so a killed process leaves the
previous file or none, never half of one; ``stage_finished`` also refuses a weights file that
does not read whole (a disk that failed), and ``remove_temporaries`` sweeps what a kill left."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

Weights = dict[str, Tensor]


def stage_weights(out: Path, stage: str) -> Path:
    """Where a finished stage's EMA weights live; later stages and the export read them."""
    return out / stage / "model.safetensors"


def save_stage(module: nn.Module, out: Path, stage: str) -> None:
    """Write a stage's weights as safetensors (atomically)."""
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    path = stage_weights(out, stage)
    tmp = path.with_suffix(".tmp")
    save_file(state, tmp)
    os.replace(tmp, path)


def stage_finished(out: Path, stage: str) -> bool:
    """Whether the stage's weights file exists and reads whole (safetensors checks the data
    against its header); an unreadable one is deleted, so the stage runs again (resuming from
    its checkpoint, which is at its last iteration) and writes it anew."""
    path = stage_weights(out, stage)
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
        return True
    except (SafetensorError, OSError, ValueError):
        print(f"{path} is unreadable (truncated?): stage '{stage}' runs again")
        path.unlink()
        return False


def remove_temporaries(out: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed run left in its stage folders; returns them."""
    leftovers = sorted(out.glob("*/*.tmp")) if out.is_dir() else []
    for path in leftovers:
        path.unlink()
    return leftovers


def load_stages(out: Path, stages: Iterable[str]) -> dict[str, Weights]:
    """The weights of finished stages by name; a missing one is a FileNotFoundError naming it."""
    weights = {}
    for stage in stages:
        path = stage_weights(out, stage)
        if not path.is_file():
            raise FileNotFoundError(f"stage '{stage}' has not finished in {out} (no {path})")
        weights[stage] = load_file(path)
    return weights


def substate(state: Mapping[str, Tensor], prefix: str) -> Weights:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class Checkpoint:
    """``last.ckpt`` in a stage folder: tensors and plain values only (loaded weights_only)."""

    def __init__(self, folder: Path):
        self.path = folder / "last.ckpt"

    def save(self, iteration: int, elapsed: float, model: nn.Module, ema: nn.Module, opt,
             sched) -> None:
        state = {
            "iteration": iteration,
            "elapsed": elapsed,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
        }
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, model: nn.Module, ema: nn.Module, opt, sched, device) -> tuple[int, float]:
        """Restore everything; returns (iteration, training seconds spent so far)."""
        state = torch.load(self.path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        return int(state["iteration"]), float(state["elapsed"])
