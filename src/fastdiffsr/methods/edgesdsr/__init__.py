"""Edge-SD-SR (Hadji, Noroozi et al., CVPR 2025): model in ``model.py``, training stages in
``recipe.py``; both build on ``methods/yonos``."""

from .model import EdgeSDSR, EdgeSDSRConfig
from .recipe import ABLATION_STAGES, STAGES, EdgeSDSRRecipe, assemble, build_stage, export

Config = EdgeSDSRConfig
Recipe = EdgeSDSRRecipe


def build(cfg: EdgeSDSRConfig) -> EdgeSDSR:
    return EdgeSDSR(cfg)


__all__ = ["ABLATION_STAGES", "STAGES", "EdgeSDSR", "EdgeSDSRConfig", "EdgeSDSRRecipe",
           "assemble", "build", "build_stage", "export"]
