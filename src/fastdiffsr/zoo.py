"""Model files and the shipped zoo.

One ``.safetensors`` file per model. Its metadata holds ``format`` ("fastdiffsr"), ``method``,
``config`` (the model dataclass as JSON) and ``provenance`` (JSON: how it was trained).
Loading never unpickles; any unreadable, truncated or foreign file raises ``ModelFileError``
naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ConfigError, from_dict, to_dict
from .methods import bicubic, bidiffsr, edgesdsr, rdsr, yonos
from .upscaler import Upscaler

FORMAT = "fastdiffsr"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "rdsr-x4"
ALIASES = {"bicubic": "bicubic-x4"}

# The registry: method name -> module with ``Config`` and ``build(cfg) -> Upscaler``.
METHODS: dict[str, ModuleType] = {"bicubic": bicubic, "rdsr": rdsr, "yonos": yonos,
                                  "bidiffsr": bidiffsr, "edgesdsr": edgesdsr}


class ModelFileError(ValueError):
    """A weights file that cannot be used; the message names the file."""


def save_model(model: Upscaler, path: str | Path, provenance: dict | None = None) -> Path:
    """Write ``model`` (with its ``cfg`` dataclass) as one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "method": model.method,
        "config": json.dumps(to_dict(model.cfg)),
        "provenance": json.dumps(provenance or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, path, metadata=meta)
    return path


def resolve(name_or_path: str | Path) -> Path:
    """A shipped model name (see ``available_models``) or a path -> the weights file."""
    text = str(name_or_path)
    name = ALIASES.get(text, text)
    shipped = WEIGHTS_DIR / f"{name}.safetensors"
    if shipped.is_file():
        return shipped
    path = Path(text)
    if path.is_file():
        return path
    known = ", ".join(available_models())
    raise ModelFileError(f"no model named or found at '{text}' (shipped models: {known})")


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata; raises ModelFileError for anything not a fastdiffsr safetensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for broken headers
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT or meta.get("method") not in METHODS:
        raise ModelFileError(
            f"{path}: not a fastdiffsr model file (format={meta.get('format')!r}, "
            f"method={meta.get('method')!r})"
        )
    return meta


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
    deploy: bool = True,
) -> Upscaler:
    """Load a shipped model by name or any fastdiffsr ``.safetensors`` file, in eval mode.

    ``deploy=True`` converts to the inference form (e.g. RDSR's fused 3x3 convs).
    """
    path = resolve(name_or_path)
    meta = read_metadata(path)
    method = METHODS[meta["method"]]
    try:
        cfg = from_dict(method.Config, json.loads(meta["config"]))
        model = method.build(cfg)
        state = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                state[key] = f.get_tensor(key)
        model.load_state_dict(state)
    except (ConfigError, json.JSONDecodeError, TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ModelFileError(f"{path}: weights do not match method '{meta['method']}': {e}") from e
    if deploy:
        model.fuse()
    return model.to(device).eval()


def model_provenance(name_or_path: str | Path) -> dict:
    """The provenance record stored in a model file."""
    return json.loads(read_metadata(resolve(name_or_path))["provenance"])


def available_models() -> list[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
