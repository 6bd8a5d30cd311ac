"""fastdiffsr: fast diffusion super-resolution for CPUs and edge devices.

``upscale(image, model=..., progress=..., **options)`` upscales a Picture, numpy array, PIL
image or path; ``load_model`` loads a shipped model by name (see ``available_models()``) or a
``.safetensors`` / ``.onnx`` file. ``UpscaleOptions`` lists the options; a bad one raises
``OptionError``, and a progress callback that returns False stops the upscale with
``Cancelled``.

The names load on first use (PEP 562), so ``fastdiffsr models`` and ``--help`` answer without
importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Cancelled": "upscaler",
    "DEFAULT_MODEL": "zoo",
    "ImageReadError": "errors",
    "ModelFileError": "errors",
    "OptionError": "errors",
    "Picture": "imageio",
    "UpscaleOptions": "upscaler",
    "available_models": "zoo",
    "load_model": "zoo",
    "read_image": "imageio",
    "upscale": "api",
    "write_image": "imageio",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastdiffsr' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
