"""fastdiffsr: fast diffusion super-resolution for CPUs and edge devices.

``upscale(image, model=...)`` upscales a Picture, numpy array, PIL image or path;
``load_model`` loads a shipped model by name (see ``available_models()``) or a
``.safetensors`` file.
"""

from .api import upscale
from .imageio import Picture, read_image, write_image
from .zoo import available_models, load_model

__version__ = "0.1.0"

__all__ = [
    "Picture",
    "__version__",
    "available_models",
    "load_model",
    "read_image",
    "upscale",
    "write_image",
]
