"""RDSR (Sun et al., PRCV 2024): the inference model (``model.py``); its training stages are
``fastdiffsr.train.recipes.rdsr``."""

from .model import RDSR, RDSRConfig

Config = RDSRConfig


def build(cfg: RDSRConfig) -> RDSR:
    """The training-form model; ``zoo.load_model`` calls ``fuse()`` on it for deployment."""
    return RDSR(cfg)


__all__ = ["RDSR", "Config", "RDSRConfig", "build"]
