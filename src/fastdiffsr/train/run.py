"""``fastdiffsr train CONFIG.toml``: run a method's stages in order and export the final model.

A config file has ``method`` and ``name`` at the top and the method's recipe tables below.
Each stage writes ``OUT/<stage>/`` (checkpoint, log, curves, weights, and ``recipe.json``: the
config it trained with, overrides applied); the last one is followed by
``OUT/<name>.safetensors``, the loadable model with its provenance.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import ConfigError, apply_overrides, from_dict, load_toml, to_dict
from ..zoo import METHODS, save_model
from .trainer import init_distributed, save_stage, stage_weights, train_stage


def load_recipe(path: Path, overrides: Sequence[str] = ()):
    """(method module, name, recipe dataclass) from a TOML config and ``KEY=VALUE`` overrides."""
    data = apply_overrides(load_toml(path), overrides)
    method_name, name = data.pop("method", None), data.pop("name", None)
    if method_name not in METHODS or not hasattr(METHODS[method_name], "Recipe"):
        raise ConfigError(f"{path}: 'method' must be a trainable method, got {method_name!r}")
    if not name:
        raise ConfigError(f"{path}: missing 'name'")
    method = METHODS[method_name]
    return method, name, from_dict(method.Recipe, data)


def stage_recipe(out: Path, stage: str):
    """(method module, name, recipe) that trained ``OUT/<stage>`` (its ``recipe.json``): a run
    folder stays loadable after its config file changes."""
    path = out / stage / "recipe.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the recipe of {out / stage}: {e}") from e
    method = METHODS[data["method"]]
    return method, data["name"], from_dict(method.Recipe, data["recipe"])


def _write_recipe(out: Path, stage: str, method, name: str, recipe, config: Path,
                  overrides: Sequence[str]) -> None:
    (out / stage).mkdir(parents=True, exist_ok=True)
    data = {"method": next(k for k, m in METHODS.items() if m is method), "name": name,
            "config_file": str(config), "overrides": list(overrides), "recipe": to_dict(recipe)}
    (out / stage / "recipe.json").write_text(json.dumps(data, indent=1) + "\n")


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run(config: Path, out: Path, device: torch.device, stage: str | None, resume: bool,
        stop_at: int | None = None, overrides: Sequence[str] = ()) -> Path | None:
    """Train the requested stage (or every unfinished stage); returns the exported model path."""
    method, name, recipe = load_recipe(config, overrides)
    stages = method.STAGES if stage is None else (stage,)
    known = method.STAGES + method.ABLATION_STAGES
    if stage is not None and stage not in known:
        raise ConfigError(f"unknown stage {stage!r}; {name} has {known}")
    info = init_distributed(device)
    for s in stages:
        if stage is None and stage_weights(out, s).exists():
            continue
        cfg = getattr(recipe, s)
        if info.main:
            _write_recipe(out, s, method, name, recipe, config, overrides)
        ema, seconds = train_stage(lambda s=s: method.build_stage(recipe, s, out), cfg,
                                   recipe.model.scale, out / s, device, resume, stop_at)
        if stop_at is not None and stop_at < cfg.steps:
            return None
        if info.main:
            save_stage(ema, out, s)
            (out / s / "wall_seconds.txt").write_text(f"{seconds:.0f}\n")
    if info.world > 1:
        dist.destroy_process_group()
    if not info.main or stages[-1] != method.STAGES[-1]:
        return None
    provenance = {
        "name": name,
        "config_file": str(config),
        "overrides": list(overrides),
        "command": " ".join(["fastdiffsr", *sys.argv[1:]]),
        "recipe": to_dict(recipe),
        "hardware": hardware(device),
        "world_size": info.world,
        "stages": {s: {"steps": getattr(recipe, s).steps,
                       "wall_seconds": _read_wall(out / s / "wall_seconds.txt")}
                   for s in method.STAGES},
        "torch": torch.__version__,
    }
    return save_model(method.export(recipe, out), out / f"{name}.safetensors", provenance)


def _read_wall(path: Path) -> float | None:
    return float(path.read_text()) if path.exists() else None
