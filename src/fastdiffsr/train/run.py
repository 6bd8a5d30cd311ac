"""``fastdiffsr train CONFIG.toml``: run a method's stages in order and export the final model.

A config file has ``method`` and ``name`` at the top and the method's recipe tables below;
relative paths in it resolve against the config file's folder. Each stage writes
``OUT/<stage>/`` (checkpoint, log, curves, weights, and ``recipe.json``: the config it trained
with, overrides applied); after the stages the export needs comes ``OUT/<name>.safetensors``,
the loadable model with its provenance.
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
from ..zoo import save_model
from .checkpoints import load_stages, remove_temporaries, save_stage, stage_finished
from .registry import RECIPES, TrainingMethod
from .stages import Stage, stage_order
from .trainer import init_distributed, train_stage


def load_recipe(path: Path, overrides: Sequence[str] = ()):
    """(method name, run name, recipe dataclass) from a TOML config and ``KEY=VALUE``
    overrides; relative paths resolve against the config file's folder."""
    data = apply_overrides(load_toml(path), overrides)
    method, name = data.pop("method", None), data.pop("name", None)
    if method not in RECIPES:
        raise ConfigError(f"{path}: 'method' must be one of {tuple(RECIPES)}, got {method!r}")
    if not name:
        raise ConfigError(f"{path}: missing 'name'")
    try:
        return method, name, from_dict(RECIPES[method].Recipe, data, base=Path(path).parent)
    except ValueError as e:  # a recipe's own checks (__post_init__)
        raise ConfigError(f"{path}: {e}") from e


def stage_recipe(out: Path, stage: str):
    """(method name, run name, recipe) that trained ``OUT/<stage>`` (its ``recipe.json``): a run
    folder stays loadable after its config file changes."""
    path = out / stage / "recipe.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the recipe of {out / stage}: {e}") from e
    method = data["method"]
    return method, data["name"], from_dict(RECIPES[method].Recipe, data["recipe"])


def _write_recipe(out: Path, stage: str, method: str, name: str, recipe, config: Path,
                  overrides: Sequence[str]) -> None:
    (out / stage).mkdir(parents=True, exist_ok=True)
    data = {"method": method, "name": name, "config_file": str(config),
            "overrides": list(overrides), "recipe": to_dict(recipe)}
    (out / stage / "recipe.json").write_text(json.dumps(data, indent=1) + "\n")


def planned_stages(training: TrainingMethod, out: Path, stage: str | None) -> list[Stage]:
    """``stage`` alone (its needs must have finished), else every unfinished stage the export
    needs, each after the stages it needs."""
    if stage is not None:
        return stage_order(training.STAGES, [stage])[-1:]
    order = stage_order(training.STAGES, training.EXPORT.needs)
    return [s for s in order if not stage_finished(out, s.name)]


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run(config: Path, out: Path, device: torch.device, stage: str | None, resume: bool,
        stop_at: int | None = None, overrides: Sequence[str] = ()) -> Path | None:
    """Train the requested stage (or every unfinished stage the export needs); returns the
    exported model's path when those stages have all finished (not after an ablation stage)."""
    method, name, recipe = load_recipe(config, overrides)
    training = RECIPES[method]
    try:
        stages = planned_stages(training, out, stage)
    except ValueError as e:
        raise ConfigError(f"{config}: {e}") from e
    info = init_distributed(device)
    if info.main:
        remove_temporaries(out)
    for s in stages:
        cfg = getattr(recipe, s.name)
        weights = load_stages(out, s.needs)
        if info.main:
            _write_recipe(out, s.name, method, name, recipe, config, overrides)
        ema, seconds = train_stage(lambda s=s, w=weights: s.build(recipe, w), cfg,
                                   recipe.model.scale, out / s.name, device, resume, stop_at)
        if stop_at is not None and stop_at < cfg.iterations:
            return None
        if info.main:
            save_stage(ema, out, s.name)
            (out / s.name / "wall_seconds.txt").write_text(f"{seconds:.0f}\n")
    if info.world > 1:
        dist.destroy_process_group()
    needs = training.EXPORT.needs
    finished = all(stage_finished(out, n) for n in needs)
    if not info.main or not finished or stage not in (None, *needs):
        return None
    provenance = {
        "name": name,
        "config_file": str(config),
        "overrides": list(overrides),
        "command": " ".join(["fastdiffsr", *sys.argv[1:]]),
        "recipe": to_dict(recipe),
        "hardware": hardware(device),
        "world_size": info.world,
        "stages": {s.name: {"iterations": getattr(recipe, s.name).iterations,
                            "wall_seconds": _read_wall(out / s.name / "wall_seconds.txt")}
                   for s in stage_order(training.STAGES, needs)},
        "torch": torch.__version__,
    }
    model = training.EXPORT.build(recipe, load_stages(out, needs))
    return save_model(model, out / f"{name}.safetensors", provenance)


def _read_wall(path: Path) -> float | None:
    return float(path.read_text()) if path.exists() else None
