"""YONOS-SR (Noroozi et al., ECCV 2024): the inference model (``model.py``); its training stages
are ``fastdiffsr.train.recipes.yonos``."""

from .model import YONOS, YONOSConfig

Config = YONOSConfig


def build(cfg: YONOSConfig) -> YONOS:
    return YONOS(cfg)


__all__ = ["YONOS", "Config", "YONOSConfig", "build"]
