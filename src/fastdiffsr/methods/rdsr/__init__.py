"""RDSR (Sun et al., PRCV 2024): model in ``model.py``, training stages in ``recipe.py``."""

from .model import RDSR, RDSRConfig
from .recipe import STAGES, RDSRRecipe, build_stage, export

Config = RDSRConfig
Recipe = RDSRRecipe
ABLATION_STAGES: tuple[str, ...] = ()


def build(cfg: RDSRConfig) -> RDSR:
    """The training-form model; ``zoo.load_model`` calls ``fuse()`` on it for deployment."""
    return RDSR(cfg)


__all__ = ["ABLATION_STAGES", "RDSR", "RDSRConfig", "RDSRRecipe", "STAGES", "build",
           "build_stage", "export"]
