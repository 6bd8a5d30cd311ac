"""Tests for fastdiffsr.zoo: model files (save, load, metadata, broken files) and CLI errors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fastdiffsr.cli import main
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.imageio import Picture, write_image
from fastdiffsr.methods.bicubic import Bicubic, BicubicConfig
from fastdiffsr.methods.rdsr.model import RDSR, RDSRConfig
from fastdiffsr.zoo import (
    FORMAT,
    WEIGHTS_DIR,
    ModelFileError,
    available_models,
    load_model,
    model_provenance,
    read_metadata,
    real_degradations,
    save_model,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "fastdiffsr"
TINY = RDSRConfig(channels=8, blocks=2, prior_dim=8, lpe_channels=8, denoiser_width=16)


@pytest.fixture(scope="module")
def rdsr_file(tmp_path_factory) -> Path:
    """A small RDSR with non-trivial FiLM layers (they are zero-initialised), saved once."""
    torch.manual_seed(0)
    model = RDSR(TINY)
    with torch.no_grad():
        for p in model.repd.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("models") / "tiny-rdsr.safetensors"
    return save_model(model, path, provenance={"stage": "test", "iterations": 3})


def _tensors_and_meta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def _assert_load_fails(path: Path) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(path) in str(info.value)
    return str(info.value)


# ----------------------------------------------------------------------------- round trips


def test_bicubic_round_trip(tmp_path):
    path = save_model(Bicubic(BicubicConfig(scale=3)), tmp_path / "sub" / "b3.safetensors")
    model = load_model(path)
    assert (model.method, model.scale, model.cfg) == ("bicubic", 3, BicubicConfig(scale=3))
    assert not model.training
    x = torch.rand(1, 3, 9, 7)
    assert model(x).shape == (1, 3, 27, 21)


def test_rdsr_round_trip_both_forms(rdsr_file):
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    plain, deployed = load_model(rdsr_file, deploy=False), load_model(rdsr_file, deploy=True)
    assert not plain.deployed and deployed.deployed
    assert plain.cfg == TINY
    assert any(p.abs().sum() > 0 for p in plain.repd.films.parameters())  # FiLM really loaded
    with torch.no_grad():
        a, b = plain(x), deployed(x)
    assert a.shape == (1, 3, 80, 80)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_rdsr_round_trip_matches_saved_weights(rdsr_file):
    tensors, _ = _tensors_and_meta(rdsr_file)
    state = load_model(rdsr_file, deploy=False).state_dict()
    assert set(state) == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(state[key], value), key


def test_metadata_and_provenance(rdsr_file):
    meta = read_metadata(rdsr_file)
    assert meta["format"] == FORMAT and meta["method"] == "rdsr"
    cfg = json.loads(meta["config"])
    assert (cfg["channels"], cfg["blocks"], cfg["prior_dim"]) == (8, 2, 8)
    assert model_provenance(rdsr_file) == {"stage": "test", "iterations": 3}


def test_shipped_models():
    names = available_models()
    assert {"bicubic-x2", "bicubic-x3", "bicubic-x4"} <= set(names)
    assert names == sorted(names)
    assert [load_model(f"bicubic-x{s}").scale for s in (2, 3, 4)] == [2, 3, 4]
    assert load_model("bicubic").scale == 4  # alias


BICUBIC_SET5 = 28.43
# the dB over bicubic a shipped model must keep on Set5: its issue's bar (BI-DiffSR's is the
# paper's own 29.63 dB, +1.2 dB, reached there after 1M GPU iterations)
MARGIN_OVER_BICUBIC = {"rdsr": 1.0, "yonos": 1.0, "edgesdsr": 1.0, "bidiffsr": 1.2}
# a model trained for real-world photos is not made for this clean LR: it must still beat
# bicubic on it (its own bars are on degraded input, benchmarks/degradations.py)
REAL_WORLD_MARGIN = 0.5


@pytest.mark.parametrize("name", [n for n in available_models() if not n.startswith("bicubic")])
def test_shipped_model_reproduces_its_card_on_set5(bench_root, name):
    """The Set5 score recorded at shipping time is what ``evaluate_set`` gives now, and every
    shipped model clears its method's bar over bicubic."""
    model = load_model(name)
    result, _ = evaluate_set(model, bench_root, "Set5")
    recorded = model_provenance(name)["scores"]["Set5"]["psnr"]
    assert result.psnr == pytest.approx(recorded, abs=0.01)
    real_world = bool(real_degradations(model_provenance(name)["recipe"]))
    margin = REAL_WORLD_MARGIN if real_world else MARGIN_OVER_BICUBIC[model.method]
    assert result.psnr > BICUBIC_SET5 + margin


# ----------------------------------------------------------------------------- broken files


def test_truncated_file(rdsr_file, tmp_path):
    data = rdsr_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 4, 20, 5):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        _assert_load_fails(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    _assert_load_fails(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _assert_load_fails(path)


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, path)
    assert "not a fastdiffsr model" in _assert_load_fails(path)


def test_unknown_method(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({}, path, metadata={"format": FORMAT, "method": "esrgan", "config": "{}"})
    assert "esrgan" in _assert_load_fails(path)


def test_renamed_tensor(rdsr_file, tmp_path):
    tensors, meta = _tensors_and_meta(rdsr_file)
    key = "repd.tail.conv3.weight"
    tensors["repd.tail.conv3.renamed"] = tensors.pop(key)
    path = tmp_path / "renamed.safetensors"
    save_file(tensors, path, metadata=meta)
    assert "do not match" in _assert_load_fails(path)


def test_config_disagrees_with_tensors(rdsr_file, tmp_path):
    tensors, meta = _tensors_and_meta(rdsr_file)
    meta["config"] = json.dumps({**json.loads(meta["config"]), "channels": 16})
    path = tmp_path / "wide.safetensors"
    save_file(tensors, path, metadata=meta)
    _assert_load_fails(path)


@pytest.mark.parametrize(("method", "config"), [
    ("bicubic", '{"scale": 4, "nope": 1}'),  # unknown key
    ("bicubic", "{not json"),
    ("bicubic", None),  # no config at all
    ("rdsr", '{"channels": "8"}'),  # wrong type: the model's constructor raises TypeError
])
def test_bad_config_metadata(tmp_path, method, config):
    meta = {"format": FORMAT, "method": method, "provenance": "{}"}
    if config is not None:
        meta["config"] = config
    path = tmp_path / "bad-config.safetensors"
    save_file({}, path, metadata=meta)
    _assert_load_fails(path)


def test_unknown_name_lists_shipped_models():
    with pytest.raises(ModelFileError) as info:
        load_model("no-such-model-x7")
    message = str(info.value)
    assert "no-such-model-x7" in message
    assert all(name in message for name in available_models())


# ----------------------------------------------------------------------------- CLI


def test_cli_bad_model_file_is_a_clean_error(rdsr_file, tmp_path, capsys):
    image = write_image(tmp_path / "img.png", Picture(np.full((6, 5, 3), 0.5, np.float32)))
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(rdsr_file.read_bytes()[:100])
    out = tmp_path / "out"
    code = main(["upscale", "-i", str(image), "-o", str(out), "-n", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fastdiffsr upscale: error:") and str(bad) in err
    assert "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------- no pickles


def _sources() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert files
    return files


def test_no_unsafe_torch_load():
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "load" and (
                isinstance(func.value, ast.Name) and func.value.id == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and (
                    kw["weights_only"].value is True
                )
                assert safe, f"{path}:{node.lineno}: torch.load without weights_only=True"


def test_no_pickle_imports():
    banned = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib"}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not banned & set(names), f"{path}:{node.lineno} imports {names}"


@pytest.mark.parametrize("name, old", [("rdsr", "diffusion_steps"), ("yonos", "train_timesteps"),
                                       ("bidiffsr", "train_timesteps")])
def test_files_with_the_old_key_names_load(name: str, old: str, tmp_path) -> None:
    """Files written before training iterations, sampling steps and diffusion timesteps got
    distinct names (``steps``, ``train_timesteps``, ``diffusion_steps`` in the config) load with
    the same config and output."""
    from fastdiffsr.zoo import method

    from .test_contract import TINY

    torch.manual_seed(0)
    model = method(name).build(TINY[name])
    new = save_model(model, tmp_path / "new.safetensors")
    tensors, meta = _tensors_and_meta(new)
    config = json.loads(meta["config"])
    config[old] = config.pop("timesteps")
    if "sampling_steps" in config:
        config["steps"] = config.pop("sampling_steps")
    save_file(tensors, tmp_path / "old.safetensors", {**meta, "config": json.dumps(config)})
    a, b = load_model(new), load_model(tmp_path / "old.safetensors")
    assert a.cfg == b.cfg == TINY[name]
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(a(lr), b(lr))


def test_shipped_files_use_the_current_key_names() -> None:
    for name in available_models():
        config = json.loads(read_metadata(WEIGHTS_DIR / f"{name}.safetensors")["config"])
        assert not {"steps", "train_timesteps", "diffusion_steps"} & set(config)


# ----------------------------------------------------------------------------- hostile files


def _with(rdsr_file: Path, tmp_path: Path, name: str, config: dict | None = None,
          tensors: dict | None = None) -> Path:
    """rdsr_file with config keys replaced and / or tensors replaced, as a new file."""
    state, meta = _tensors_and_meta(rdsr_file)
    cfg = {**json.loads(meta["config"]), **(config or {})}
    path = tmp_path / f"{name}.safetensors"
    save_file({**state, **(tensors or {})}, path, metadata={**meta, "config": json.dumps(cfg)})
    return path


@pytest.mark.parametrize(("name", "config", "message"), [
    ("blocks", {"blocks": 1_000_000}, r"RDSRConfig.blocks = 1000000 is outside \[1, 256\]"),
    ("channels", {"channels": 20000}, "RDSRConfig.channels = 20000 is outside"),
    ("width", {"denoiser_width": 100000}, "denoiser_width = 100000 is outside"),
    ("timesteps", {"timesteps": 10**9}, "timesteps = 1000000000 is outside"),
    ("nan_scale", {"beta_end": float("nan")}, "beta_end = nan is outside"),
    ("bool", {"blocks": True}, "blocks must be int, got True"),
    ("in_range_but_huge", {"channels": 1024, "blocks": 256},
     "asks for 3,497,167,976 parameters, over the 1,000,000,000 limit"),
    ("in_range_but_not_the_file", {"channels": 16}, "its tensors do not match its config"),
])
def test_hostile_configs_are_refused_before_anything_is_allocated(rdsr_file, tmp_path, name,
                                                                  config, message):
    """Without growing the process: the config's ranges, then the parameter count and shapes a
    meta-device build gives, checked against the file's header. (No wall-clock bound: a timed
    assertion failed CI on a slower machine, where the 3.5e9-parameter meta build took 1.5 s.)"""
    import resource

    path = _with(rdsr_file, tmp_path, name, config=config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFileError, match=message):
        load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "holds NaN or infinite values"), (float("inf"), "holds NaN or infinite")])
def test_non_finite_weights_are_refused_naming_the_tensor(rdsr_file, tmp_path, value, message):
    state, _ = _tensors_and_meta(rdsr_file)
    key = next(k for k in state if k.endswith("weight"))
    bad = state[key].clone()
    bad.view(-1)[0] = value
    error = _assert_load_fails(_with(rdsr_file, tmp_path, "nan", tensors={key: bad}))
    assert key in error and message in error


def test_wrong_dtype_is_refused(rdsr_file, tmp_path):
    state, _ = _tensors_and_meta(rdsr_file)
    key = next(k for k in state if k.endswith("weight"))
    error = _assert_load_fails(_with(rdsr_file, tmp_path, "dtype",
                                     tensors={key: state[key].to(torch.float64)}))
    assert f"tensor {key} is torch.float64, expected torch.float32" in error


def test_non_finite_output_is_an_error_not_an_image(tmp_path, capsys):
    from fastdiffsr.errors import NonFiniteOutputError
    from fastdiffsr.upscaler import upscale_tensor

    model = Bicubic(BicubicConfig())
    with pytest.raises(NonFiniteOutputError, match="NaN or infinite"):
        upscale_tensor(model, torch.full((1, 3, 8, 8), float("nan")))
