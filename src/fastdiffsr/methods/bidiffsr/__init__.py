"""BI-DiffSR (Chen et al., NeurIPS 2024): the inference model (``model.py``); its training stage
is ``fastdiffsr.train.recipes.bidiffsr``."""

from .model import BIDiffSR, BIDiffSRConfig

Config = BIDiffSRConfig


def build(cfg: BIDiffSRConfig) -> BIDiffSR:
    """The training form; ``zoo.load_model`` packs it (``fuse``) or loads a packed file."""
    return BIDiffSR(cfg)


__all__ = ["BIDiffSR", "BIDiffSRConfig", "Config", "build"]
