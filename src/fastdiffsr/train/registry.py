"""The training registry: method name -> its recipe module (a ``TrainingMethod``), an explicit
dict beside ``zoo.METHODS``; only ``fastdiffsr.train`` imports it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .recipes import bidiffsr, edgesdsr, rdsr, yonos
from .stages import Export, Stage


@runtime_checkable
class TrainingMethod(Protocol):
    """The training contract of a method: ``Recipe`` (a frozen dataclass with ``model``, the
    method's ``Config``, and one ``TrainConfig`` per stage, named as the stage), ``STAGES`` (each
    with the stages it needs) and ``EXPORT`` (the shipped model from finished stages)."""

    Recipe: type
    STAGES: tuple[Stage, ...]
    EXPORT: Export


RECIPES: dict[str, TrainingMethod] = {"rdsr": rdsr, "bidiffsr": bidiffsr, "yonos": yonos,
                                      "edgesdsr": edgesdsr}
