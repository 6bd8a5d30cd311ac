"""A recipe's stages as data: each names the finished stages it needs, and ``stage_order`` puts
them in the order they run, for every method alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..upscaler import Upscaler
from .checkpoints import Weights

# (recipe, {needed stage: its EMA weights}) -> a fresh module
StageBuild = Callable[[Any, Mapping[str, Weights]], nn.Module]


@dataclass(frozen=True)
class Stage:
    """One training stage: ``build(recipe, weights)`` makes its module (``forward(lr, hr) ->
    (loss, logs)``, ``validation_sr(lr, hr)``, optionally ``param_groups()``) from the weights
    of the stages in ``needs``. The recipe's ``TrainConfig`` for it is the field ``name``."""

    name: str
    build: StageBuild
    needs: tuple[str, ...] = ()
    ablation: bool = False  # not on the way to the shipped model (not run by default)


@dataclass(frozen=True)
class Export:
    """The shipped model from the finished stages in ``needs``."""

    build: Callable[[Any, Mapping[str, Weights]], Upscaler]
    needs: tuple[str, ...]


def stage_order(stages: Sequence[Stage], goals: Sequence[str]) -> list[Stage]:
    """The ``goals`` and every stage they need, each after what it needs (depth first, in the
    order ``needs`` lists them); raises ValueError for an unknown name or a cycle."""
    by_name = {s.name: s for s in stages}
    order: list[Stage] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name not in by_name:
            raise ValueError(f"unknown stage {name!r}; stages: {tuple(by_name)}")
        if any(s.name == name for s in order):
            return
        if name in visiting:
            raise ValueError(f"stage {name!r} needs itself")
        visiting.add(name)
        for need in by_name[name].needs:
            visit(need)
        order.append(by_name[name])

    for goal in goals:
        visit(goal)
    return order
