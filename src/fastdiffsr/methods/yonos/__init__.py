"""YONOS-SR (Noroozi et al., ECCV 2024): model in ``model.py``, training stages in ``recipe.py``."""

from .model import YONOS, YONOSConfig
from .recipe import ABLATION_STAGES, STAGES, YONOSRecipe, assemble, build_stage, export

Config = YONOSConfig
Recipe = YONOSRecipe


def build(cfg: YONOSConfig) -> YONOS:
    return YONOS(cfg)


__all__ = ["ABLATION_STAGES", "STAGES", "YONOS", "YONOSConfig", "YONOSRecipe", "assemble",
           "build", "build_stage", "export"]
