"""Model files and the shipped zoo.

One ``.safetensors`` file per model. Its metadata holds ``format`` ("fastdiffsr"), ``method``,
``config`` (the model dataclass as JSON) and ``provenance`` (JSON: how it was trained).
Loading never unpickles; any unreadable, truncated or foreign file raises ``ModelFileError``
naming the file. Loading a model imports its own method's inference code only (``METHODS``
maps names to module paths), never ``fastdiffsr.train``. Importing this module does not import
torch: the header readers (``read_metadata``, ``header_params``) serve ``fastdiffsr models``
without it.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from safetensors import safe_open

from .config import ConfigError, from_dict, to_dict
from .errors import ModelFileError

if TYPE_CHECKING:
    import torch

    from .upscaler import Upscaler

FORMAT = "fastdiffsr"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "rdsr-x4"
ALIASES = {"bicubic": "bicubic-x4"}
REAL_PHOTO_MODEL = "rdsr-x4-real"  # what a user with a compressed or noisy photo is pointed to
COMPRESSED_BELOW = 90  # JPEG quality with visible blocks at x4 (phone cameras save at 90-95)
MAX_PARAMS = 1_000_000_000  # a model file asking for more is refused before anything is built

# The registry: method name -> the module (a ``Method``) that builds its inference model,
# imported when a model of that method is loaded.
METHODS: dict[str, str] = {
    "bicubic": "fastdiffsr.methods.bicubic",
    "rdsr": "fastdiffsr.methods.rdsr",
    "bidiffsr": "fastdiffsr.methods.bidiffsr",
    "yonos": "fastdiffsr.methods.yonos",
    "edgesdsr": "fastdiffsr.methods.edgesdsr",
}

# Model-config keys renamed when training iterations, sampling steps and diffusion timesteps got
# distinct names (2026-12-04); files written before keep loading.
RENAMED_CONFIG_KEYS = {"steps": "sampling_steps", "train_timesteps": "timesteps",
                       "diffusion_steps": "timesteps"}


@runtime_checkable
class Method(Protocol):
    """The inference contract of a method (an entry of ``METHODS``): its config dataclass and
    ``build(cfg)``, the model in its training form (``load_model`` calls ``fuse`` to deploy).
    Training adds ``fastdiffsr.train.registry.TrainingMethod``."""

    Config: type

    def build(self, cfg: Any) -> Upscaler: ...


def method(name: str) -> Method:
    """The module of a registered method, imported on first use."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def method_config(name: str, data: dict[str, Any]) -> Any:
    """A method's config dataclass from its JSON/TOML table, reading the renamed keys' old names."""
    data = {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in data.items()}
    return from_dict(method(name).Config, data)


def save_model(model: Upscaler, path: str | Path, provenance: dict | None = None) -> Path:
    """Write ``model`` (with its ``cfg`` dataclass) as one safetensors file."""
    from safetensors.torch import save_file

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
    """The file's metadata; raises ModelFileError for anything not a fastdiffsr safetensors.
    Reads the header only (numpy framework: no torch import, no tensor data)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
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

    ``deploy=True`` converts to the inference form (e.g. RDSR's fused 3x3 convs). A ``.onnx``
    file written by ``fastdiffsr export`` runs through ONNX Runtime on the CPU
    (``backends.onnx``, the deploy extra), a ``.pte`` program through ExecuTorch
    (``backends.executorch``, the edge extra).
    """
    path = resolve(name_or_path)
    if path.suffix.lower() == ".onnx":  # an exported file: ONNX Runtime on the CPU
        from .backends.onnx import OnnxUpscaler

        return OnnxUpscaler(path)
    if path.suffix.lower() == ".pte":
        from .backends.executorch import PteUpscaler

        return PteUpscaler(path)
    meta = read_metadata(path)
    name = meta["method"]
    try:
        build = method(name).build
        cfg = method_config(name, json.loads(meta["config"]))  # every number in its range
        expected = _expected_tensors(build, cfg, path)
        model = build(cfg)  # as large as the file's own tensors, no larger
        state = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                state[key] = _checked(f.get_tensor(key), key, expected[key], path)
        model.load_state_dict(state)
    except ModelFileError:
        raise
    except (ConfigError, json.JSONDecodeError, TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ModelFileError(f"{path}: weights do not match method '{name}': {e}") from e
    if deploy:
        model.fuse()
    return model.to(device).eval()


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each stored tensor's shape, from the file's header (no tensor is read)."""
    with safe_open(str(path), framework="numpy") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def header_params(path: Path) -> int:
    """Parameters stored in a model file, from its header's shapes (no tensor is read)."""
    return sum(math.prod(shape) for shape in header_shapes(path).values())


def _expected_tensors(build, cfg: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model's state (shapes and dtypes, no data: built on the meta device), in its
    training form or, if the file holds that, its deployed form (BI-DiffSR's packed bits);
    refused above ``MAX_PARAMS`` or when the file's header stores other tensors: only then is
    the real model built, so a config cannot make it allocate more than the file holds."""
    import torch

    with torch.device("meta"):
        model = build(cfg)
    expected = model.state_dict()
    params = sum(t.numel() for t in expected.values())
    if params > MAX_PARAMS:
        raise ModelFileError(f"{path}: its config asks for {params:,} parameters, over the "
                             f"{MAX_PARAMS:,} limit")
    stored = header_shapes(path)
    if stored.keys() != expected.keys():  # other names: the deployed form?
        with torch.device("meta"):
            model.fuse()
        expected = model.state_dict()
    if stored != {k: tuple(t.shape) for k, t in expected.items()}:
        missing = sorted(expected.keys() - stored.keys())
        extra = sorted(stored.keys() - expected.keys())
        wrong = sorted(k for k in stored.keys() & expected.keys()
                       if stored[k] != tuple(expected[k].shape))
        raise ModelFileError(f"{path}: its tensors do not match its config (missing "
                             f"{missing[:3]}, unexpected {extra[:3]}, other shape {wrong[:3]})")
    return expected


def _checked(tensor: torch.Tensor, key: str, expected: torch.Tensor, path: Path) -> torch.Tensor:
    """``tensor`` if its dtype is the model's and its values are finite, else ModelFileError
    naming the file and the tensor."""
    import torch

    if tensor.dtype != expected.dtype:
        raise ModelFileError(f"{path}: tensor {key} is {tensor.dtype}, expected {expected.dtype}")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ModelFileError(f"{path}: tensor {key} holds NaN or infinite values")
    return tensor


def model_provenance(name_or_path: str | Path) -> dict:
    """The provenance record stored in a model file."""
    return json.loads(read_metadata(resolve(name_or_path))["provenance"])


def summary(name: str) -> dict[str, Any]:
    """A shipped model as ``fastdiffsr models`` and the server list it, from the file's header
    only (no weights loaded, no torch imported): scores and the 128->512 latency its card
    measured, the parameters that run, and the input it was trained for."""
    path = resolve(name)
    meta = read_metadata(path)
    prov = json.loads(meta["provenance"])
    scores = prov.get("scores", {})
    latency = prov.get("latency", {})
    return {
        "name": name,
        "default": name == DEFAULT_MODEL,
        "aliases": [a for a, n in ALIASES.items() if n == name],
        "method": meta["method"],
        "scale": int(prov.get("recipe", {}).get("model", {}).get("scale",
                                                                  name.rpartition("x")[2])),
        "params": prov.get("params_deployed", header_params(path)),  # what runs, else stored
        "psnr": {s: scores[s]["psnr"] for s in ("Set5", "Set14", "B100") if s in scores},
        "latency_ms": latency.get("128->512", {}).get("latency_ms"),
        "latency_threads": latency.get("threads"),
        "trained_for": trained_for(prov.get("recipe", {})),
    }


def trained_for(recipe: dict[str, Any]) -> str:
    """The input a model expects, from its recipe: the degradation its stages made the LR by
    (``TrainConfig.degradation``; recipes from before it: bicubic); no recipe: interpolation."""
    if not recipe:
        return "any (interpolation)"
    real = real_degradations(recipe)
    return f"real-world photos ({', '.join(real)})" if real else "clean bicubic-downscaled LR"


def real_degradations(recipe: dict[str, Any]) -> list[str]:
    """The real-world degradations (not the clean bicubic downscale) the recipe's stages made
    their LR by, sorted."""
    made = {stage.get("degradation", "bicubic") for stage in recipe.values()
            if isinstance(stage, dict) and "iterations" in stage}
    return sorted(made - {"bicubic"})


def trained_on_clean(name_or_path: str | Path) -> bool:
    """Whether the model file's recipe made every training LR by the clean bicubic downscale
    (False for interpolation, exported files and models trained on real-world input)."""
    path = resolve(name_or_path)
    if path.suffix.lower() != ".safetensors":
        return False
    recipe = model_provenance(path).get("recipe", {})
    return bool(recipe) and not real_degradations(recipe)


def compressed_input_note(filename: str, jpeg_quality: int | None, model: str) -> str | None:
    """What to tell a user whose JPEG, saved below ``COMPRESSED_BELOW``, goes to a model trained
    on clean input (it sharpens the blocks as detail); None otherwise."""
    if jpeg_quality is None or jpeg_quality >= COMPRESSED_BELOW or not trained_on_clean(model):
        return None
    return (f"{filename} is a JPEG saved at quality {jpeg_quality}: {model} was trained on "
            f"clean images and sharpens compression blocks as detail; {REAL_PHOTO_MODEL} is "
            "trained for such photos")


def available_models() -> list[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
