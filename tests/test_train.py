"""The training engine: exact resume, DDP == one process at the total batch, logs and export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiffsr.config import ConfigError, apply_overrides
from fastdiffsr.train.run import load_recipe, run, stage_recipe
from fastdiffsr.train.stages import Stage, stage_order
from fastdiffsr.zoo import load_model, model_provenance

from .conftest import ROOT, tiny_rdsr_toml

CPU = torch.device("cpu")


def _config(tmp: Path, data: Path, **kw) -> Path:
    path = tmp / f"tiny_{kw.get('batch', 2)}.toml"
    path.write_text(tiny_rdsr_toml(data, **kw))
    return path


def _weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    return torch.load(out / stage / "last.ckpt", weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_resume_repeats_an_uninterrupted_run(tmp_path, train_folder) -> None:
    cfg = _config(tmp_path, train_folder)
    whole, split = tmp_path / "whole", tmp_path / "split"
    model_path = run(cfg, whole, CPU, None, resume=False)
    for stage in ("prior", "diffusion"):
        assert run(cfg, split, CPU, stage, resume=False, stop_at=2) is None
        run(cfg, split, CPU, stage, resume=True)
        assert _max_diff(_weights(whole, stage), _weights(split, stage)) <= 1e-6
    model = load_model(model_path)
    assert model.method == "rdsr" and model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_logs_curves_and_provenance(tmp_path, train_folder) -> None:
    cfg = _config(tmp_path, train_folder)
    out = tmp_path / "run"
    path = run(cfg, out, CPU, None, resume=False)
    rows = [json.loads(line) for line in (out / "prior" / "log.jsonl").read_text().splitlines()]
    assert any("val_psnr" in r for r in rows) and any("loss" in r for r in rows)
    assert (out / "prior" / "curves.png").stat().st_size > 0
    prov = model_provenance(path)
    assert prov["stages"]["prior"]["iterations"] == 4 and prov["hardware"]


def test_overrides_set_values_and_are_recorded(tmp_path, train_folder) -> None:
    """Overrides reach the stages, the provenance and each stage's recipe.json, which rebuilds
    the recipe after the config file has changed."""
    cfg = _config(tmp_path, train_folder)
    sets = ["prior.iterations=2", "diffusion.iterations=3"]
    out = tmp_path / "run"
    prov = model_provenance(run(cfg, out, CPU, None, resume=False, overrides=sets))
    assert [prov["stages"][s]["iterations"] for s in ("prior", "diffusion")] == [2, 3]
    assert prov["overrides"] == sets
    trained = load_recipe(cfg, sets)[2]
    cfg.write_text(cfg.read_text().replace("channels = 8", "channels = 12"))
    assert load_recipe(cfg, sets)[2] != trained
    for stage in ("prior", "diffusion"):
        assert stage_recipe(out, stage)[2] == trained


def test_apply_overrides_parses_toml_values_and_rejects_bad_keys() -> None:
    data = {"name": "x", "model": {"unet": {"in_channels": 32}}, "lr": 1.0}
    out = apply_overrides(data, ["model.unet.in_channels=16", "name=y z", "lr=5e-4",
                                 "model.kind=\"a\"", "flags=[1, 2]"])
    assert out == {"name": "y z", "model": {"unet": {"in_channels": 16}, "kind": "a"},
                   "lr": 5e-4, "flags": [1, 2]}
    with pytest.raises(ConfigError, match="no table \\[optim\\]"):
        apply_overrides(data, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        apply_overrides(data, ["iterations"])


def test_ddp_two_processes_equal_one_process_at_double_batch(tmp_path, train_folder) -> None:
    one = _config(tmp_path, train_folder, batch=2, iterations=1)
    two = _config(tmp_path, train_folder, batch=1, iterations=1)
    run(one, tmp_path / "single", CPU, "prior", resume=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "fastdiffsr", "train", str(two), "--stage", "prior",
           "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(_weights(tmp_path / "single", "prior"), _weights(tmp_path / "ddp", "prior")) \
        <= 1e-5
    log = (tmp_path / "ddp" / "prior" / "log.jsonl").read_text()
    assert '"world_size": 2' in log


def test_relative_paths_resolve_against_the_config_file(tmp_path, train_folder) -> None:
    """``data = "images"`` in configs/x.toml means configs/images, wherever the command runs;
    an absolute path stays as it is."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "images").symlink_to(train_folder)
    text = tiny_rdsr_toml(train_folder).replace(f'data = "{train_folder}"', 'data = "images"')
    cfg = folder / "tiny.toml"
    cfg.write_text(text)
    recipe = load_recipe(cfg)[2]
    assert recipe.prior.data == str(folder / "images")
    assert load_recipe(cfg, [f'prior.data="{train_folder}"'])[2].prior.data == str(train_folder)
    assert run(cfg, tmp_path / "run", CPU, None, resume=False).is_file()


def test_stage_order_follows_what_each_stage_needs() -> None:
    def stage(name: str, *needs: str) -> Stage:
        return Stage(name, lambda recipe, weights: None, needs)

    stages = (stage("d", "b", "c"), stage("a"), stage("b", "a"), stage("c", "a"), stage("x", "a"))
    assert [s.name for s in stage_order(stages, ["d"])] == ["a", "b", "c", "d"]
    assert [s.name for s in stage_order(stages, ["x", "d"])] == ["a", "x", "b", "c", "d"]
    with pytest.raises(ValueError, match="unknown stage 'e'"):
        stage_order(stages, ["e"])
    with pytest.raises(ValueError, match="needs itself"):
        stage_order((stage("p", "q"), stage("q", "p")), ["p"])


def test_a_stage_whose_needs_have_not_run_is_a_clear_error(tmp_path, train_folder) -> None:
    cfg = _config(tmp_path, train_folder)
    with pytest.raises(FileNotFoundError, match="stage 'prior' has not finished"):
        run(cfg, tmp_path / "run", CPU, "diffusion", resume=False)
    with pytest.raises(ConfigError, match="unknown stage 'decoder'"):
        run(cfg, tmp_path / "run", CPU, "decoder", resume=False)


# ----------------------------------------------------------------------------- faults


def test_a_truncated_stage_file_runs_that_stage_again(tmp_path, train_folder, capsys) -> None:
    """A stage's weights file cut short (a disk that failed mid-write): --resume notices,
    re-runs the stage from its checkpoint (already at its end) and exports the same model."""
    cfg = _config(tmp_path, train_folder)
    out = tmp_path / "run"
    first = load_model(run(cfg, out, CPU, None, resume=False)).state_dict()
    weights = out / "prior" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (out / "prior" / "last.tmp").write_bytes(b"half a checkpoint")  # a killed save's leftover
    again = load_model(run(cfg, out, CPU, None, resume=True)).state_dict()
    assert "prior" in capsys.readouterr().out  # it said which stage runs again
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not list(out.glob("*/*.tmp"))


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights(
        tmp_path, train_folder) -> None:
    """SIGKILL a training process at seeded random moments once it is training (its log has
    grown), three times, then --resume until it finishes: the exported weights equal an
    uninterrupted run's, and nothing temporary is left."""
    import random
    import signal
    import time

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_rdsr_toml(train_folder, iterations=12))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fastdiffsr", "train", str(cfg)]
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], env=env, check=True,
                   capture_output=True, timeout=300)
    rng, kills, out = random.Random(11), 0, tmp_path / "killed"

    def logged() -> int:
        return sum(len(p.read_bytes()) for p in out.glob("*/log.jsonl"))

    for attempt in range(20):
        before = logged()
        proc = subprocess.Popen([*cmd, "--out", str(out), *(["--resume"] if attempt else [])],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 3:
            deadline = time.monotonic() + 120
            while proc.poll() is None and logged() == before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=300) == 0
        break
    else:
        pytest.fail("the run never finished")
    assert kills >= 2, "no kill landed during training: lengthen the run"
    a = load_model(tmp_path / "whole" / "rdsr-tiny.safetensors").state_dict()
    b = load_model(out / "rdsr-tiny.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(out.glob("*/*.tmp"))
