"""fastdiffsr: fast diffusion super-resolution for CPUs and edge devices.

``upscale(image, model=..., progress=..., **options)`` upscales a Picture, numpy array, PIL
image or path; ``load_model`` loads a shipped model by name (see ``available_models()``) or a
``.safetensors`` / ``.onnx`` file. ``UpscaleOptions`` lists the options; a bad one raises
``OptionError``, and a progress callback that returns False stops the upscale with
``Cancelled``.
"""

from .api import upscale
from .imageio import ImageReadError, Picture, read_image, write_image
from .upscaler import Cancelled, OptionError, UpscaleOptions
from .zoo import DEFAULT_MODEL, ModelFileError, available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Cancelled",
    "ImageReadError",
    "ModelFileError",
    "OptionError",
    "Picture",
    "UpscaleOptions",
    "__version__",
    "available_models",
    "load_model",
    "read_image",
    "upscale",
    "write_image",
]
