"""BI-DiffSR (Chen et al., NeurIPS 2024): model in ``model.py``, training in ``recipe.py``,
binary/full-precision size counts in ``complexity.py``."""

from .model import BIDiffSR, BIDiffSRConfig
from .recipe import ABLATION_STAGES, STAGES, BIDiffSRRecipe, build_stage, export

Config = BIDiffSRConfig
Recipe = BIDiffSRRecipe


def build(cfg: BIDiffSRConfig) -> BIDiffSR:
    """The training form; ``zoo.load_model`` packs it (``fuse``) or loads a packed file."""
    return BIDiffSR(cfg)


__all__ = ["ABLATION_STAGES", "STAGES", "BIDiffSR", "BIDiffSRConfig", "BIDiffSRRecipe", "build",
           "build_stage", "export"]
