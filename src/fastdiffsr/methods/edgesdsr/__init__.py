"""Edge-SD-SR (Hadji, Noroozi et al., CVPR 2025): the inference model (``model.py``, on
``methods/yonos``'s latent stack); its training stages are ``fastdiffsr.train.recipes.edgesdsr``."""

from .model import EdgeSDSR, EdgeSDSRConfig

Config = EdgeSDSRConfig


def build(cfg: EdgeSDSRConfig) -> EdgeSDSR:
    return EdgeSDSR(cfg)


__all__ = ["Config", "EdgeSDSR", "EdgeSDSRConfig", "build"]
