"""Tests for the ``fastdiffsr`` command, run in-process with the bicubic model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiffsr import commands
from fastdiffsr.cli import build_parser, main
from fastdiffsr.imageio import Picture, picture_to_tensor, read_image, tensor_to_pixels, write_image
from fastdiffsr.metrics import psnr_y, quantize
from fastdiffsr.resize import imresize

H, W = 10, 12  # LR size of the test images


@pytest.fixture(autouse=True)
def _keep_threads():
    """``--threads`` sets torch's global thread count; put it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def mixed_dir(tmp_path) -> Path:
    """broken.png (random bytes), deep.png (16-bit RGB), rgba.png, gray.jpg (mode L)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.png").write_bytes(rng.bytes(200))
    write_image(folder / "deep.png", Picture(rng.random((H, W, 3), np.float32), None, 16))
    rgba = rng.integers(0, 256, (H, W, 4), np.uint8)
    rgba[..., 3] = np.linspace(0, 255, W).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (H, W), np.uint8), "L").save(folder / "gray.jpg")
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: ignored
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- upscale


def test_upscale_folder_skips_broken_file(mixed_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "upscale", "-i", mixed_dir, "-o", out, "-n", "bicubic")
    assert code == 1
    assert "broken.png" in err and "1 of 4 file(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["deep_out.png", "gray_out.jpg", "rgba_out.png"]

    deep = read_image(out / "deep_out.png")
    assert deep.bit_depth == 16 and deep.pixels.shape == (4 * H, 4 * W, 3)
    levels = np.round(deep.pixels * 65535).astype(np.int64)
    assert (levels % 257 != 0).any()  # really 16-bit, not 8-bit levels scaled up

    rgba = read_image(out / "rgba_out.png")
    assert rgba.bit_depth == 8 and rgba.pixels.shape == (4 * H, 4 * W, 3)
    assert rgba.alpha is not None and rgba.alpha.shape == (4 * H, 4 * W)
    assert rgba.alpha[:, 0].mean() < 0.1 < 0.9 < rgba.alpha[:, -1].mean()  # the ramp survives

    gray = read_image(out / "gray_out.jpg")
    assert gray.is_gray and gray.pixels.shape == (4 * H, 4 * W, 1)


def test_upscale_outscale_single_file(mixed_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "upscale", "-i", mixed_dir / "deep.png", "-o", out,
                      "-n", "bicubic", "-s", "2")
    assert code == 0
    assert [p.name for p in out.iterdir()] == ["deep_out.png"]
    pic = read_image(out / "deep_out.png")
    assert pic.pixels.shape == (2 * H, 2 * W, 3) and pic.bit_depth == 16


def test_upscale_ext_and_empty_suffix(mixed_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "upscale", "-i", mixed_dir / "gray.jpg", "-o", out,
                      "-n", "bicubic", "--ext", "png", "--suffix", "")
    assert code == 0
    assert [p.name for p in out.iterdir()] == ["gray.png"]
    pic = read_image(out / "gray.png")
    assert pic.is_gray and pic.pixels.shape == (4 * H, 4 * W, 1)


def test_upscale_with_tiles(mixed_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = _run(capsys, "upscale", "-i", mixed_dir / "rgba.png", "-o", out,
                      "-n", "bicubic-x2", "--tile", "8", "--tile-overlap", "4", "--threads", "1")
    assert code == 0
    assert read_image(out / "rgba_out.png").alpha.shape == (2 * H, 2 * W)


def test_upscale_missing_input_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nope.png"
    code, _, err = _run(capsys, "upscale", "-i", missing, "-o", tmp_path / "out", "-n", "bicubic")
    assert code == 2
    assert err.startswith("fastdiffsr upscale: error: argument -i/--input: not found")
    assert str(missing) in err and "Traceback" not in err


def test_upscale_unknown_model_is_a_clean_error(mixed_dir, tmp_path, capsys):
    code, _, err = _run(capsys, "upscale", "-i", mixed_dir, "-o", tmp_path / "out",
                        "-n", "no-such-model")
    assert code == 2 and "no-such-model" in err and "bicubic-x4" in err


# ----------------------------------------------------------------------------- eval


def _make_benchmark(root: Path, name: str, sizes: list[tuple[int, int]]) -> Path:
    """``<root>/<name>/HR/*.png`` and ``LRx4/*.png`` (LR = imresize(hr, 0.25))."""
    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate(sizes):
        hr = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 5, 1, 2)
        lr = imresize(hr, 0.25).clamp(0, 1)
        write_image(root / name / "HR" / f"im{i}.png", Picture(tensor_to_pixels(hr)))
        write_image(root / name / "LRx4" / f"im{i}.png", Picture(tensor_to_pixels(lr)))
    return root


def _psnr_bicubic(root: Path, name: str) -> float:
    values = []
    for hr_path in sorted((root / name / "HR").iterdir()):
        hr = picture_to_tensor(read_image(hr_path).pixels)
        lr = picture_to_tensor(read_image(root / name / "LRx4" / hr_path.name).pixels)
        values.append(psnr_y(quantize(imresize(lr, 4).clamp(0, 1)), hr, 4).item())
    return float(np.mean(values))


def test_eval_report(tmp_path, capsys):
    # HR sides > 128: see test_eval_small_images for why
    root = _make_benchmark(tmp_path / "bench", "Tiny", [(132, 136), (136, 132)])
    report = tmp_path / "report"
    code, out, _ = _run(capsys, "eval", "-n", "bicubic", "--data", root, "--sets", "Tiny",
                        "--report", report, "--threads", "1")
    assert code == 0 and "| Tiny | 2 |" in out
    assert {p.name for p in report.iterdir()} == {
        "report.md", "results.json", "Tiny_bicubic-model-gt.png"}
    results = json.loads((report / "results.json").read_text())
    assert results["model"] == "bicubic" and results["settings"]["scale"] == 4
    (tiny,) = results["sets"]
    assert tiny["name"] == "Tiny" and tiny["images"] == 2
    assert tiny["psnr"] == pytest.approx(_psnr_bicubic(root, "Tiny"), abs=1e-9)
    assert sorted(tiny["per_image"]) == ["im0", "im1"]
    assert np.mean([p for p, _ in tiny["per_image"].values()]) == pytest.approx(tiny["psnr"])
    assert np.mean([s for _, s in tiny["per_image"].values()]) == pytest.approx(tiny["ssim"])
    assert "Tiny_bicubic-model-gt.png" in (report / "report.md").read_text()


def test_eval_small_images(tmp_path, capsys):
    root = _make_benchmark(tmp_path / "bench", "Tiny", [(48, 56)])
    code, out, _ = _run(capsys, "eval", "-n", "bicubic", "--data", root, "--sets", "Tiny",
                        "--threads", "1")
    assert code == 0 and "| Tiny | 1 |" in out


@pytest.mark.parametrize("name", ["jpeg60", "noise5", "realesrgan-mild", "realesrgan-severe"])
def test_eval_on_a_named_degradation_scores_and_writes_its_lr(tmp_path, capsys, name):
    from fastdiffsr.cli import DEGRADATIONS
    from fastdiffsr.data.degradations import NAMED

    assert tuple(NAMED) == DEGRADATIONS
    root = _make_benchmark(tmp_path / "bench", "Tiny", [(48, 56), (40, 44)])
    lr_dir = tmp_path / "lr"
    code, out, _ = _run(capsys, "eval", "-n", "bicubic", "--data", root, "--sets", "Tiny",
                        "--degradation", name, "--write-lr", lr_dir, "--threads", "1")
    assert code == 0 and name in out
    written = sorted((lr_dir / "Tiny" / f"LRx4-{name}").iterdir())
    assert [p.name for p in written] == ["im0.png", "im1.png"]
    hr = picture_to_tensor(read_image(root / "Tiny" / "HR" / "im0.png").pixels)
    lr = picture_to_tensor(read_image(written[0]).pixels)
    assert torch.equal(lr, NAMED[name](hr, 4, 0))  # reproducible from the files
    clean = float(out.split("| Tiny | 2 | ")[1].split(" |")[0])
    _, plain, _ = _run(capsys, "eval", "-n", "bicubic", "--data", root, "--sets", "Tiny")
    assert clean < float(plain.split("| Tiny | 2 | ")[1].split(" |")[0])


def test_eval_missing_set_is_a_clean_error(tmp_path, capsys):
    code, _, err = _run(capsys, "eval", "-n", "bicubic", "--data", tmp_path, "--sets", "Nope")
    assert code == 2 and "Nope" in err and "Traceback" not in err


def test_eval_scale_mismatch(tmp_path, capsys):
    code, _, err = _run(capsys, "eval", "-n", "bicubic-x2", "--data", tmp_path, "--sets", "Tiny")
    assert code == 2 and "x2, not x4" in err


# ----------------------------------------------------------------------------- models, bench


def test_models(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    for s in (2, 3):
        assert f"| bicubic-x{s} | bicubic | x{s} | 0 |" in out
    assert "| bicubic-x4 (alias: bicubic) | bicubic | x4 | 0 |" in out
    default = next(line for line in out.splitlines() if "(default)" in line)
    assert default.startswith("| rdsr-x4 (default) | rdsr | x4 | 531,120 |")
    assert "ms" not in default and "(2 threads)" in default  # the card's 128->512 latency
    assert "clean bicubic-downscaled LR" in default


def test_models_and_help_do_not_import_torch() -> None:
    """They answer from the files' headers: well under a second (torch takes ~2 s to import)."""
    import subprocess
    import sys

    code = ("import sys; from fastdiffsr.cli import main; main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    for argv in (["models"], ["upscale", "--help"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True)
        assert done.returncode in (0, 1) and "torch was imported" not in done.stderr, argv


def test_bench(capsys, monkeypatch):
    monkeypatch.setattr(commands, "matmul_gflops", lambda: 100.0)  # skip the 1024^3 matmuls
    code, out, _ = _run(capsys, "bench", "-n", "bicubic", "--sizes", "16", "--repeats", "1",
                        "--threads", "1")
    assert code == 0
    assert "`bicubic`" in out and "| 16->64 |" in out


def test_bench_times_a_training_config_with_random_weights(capsys, monkeypatch, tmp_path):
    """How the paper configs (not trained here) get their latency: ``-n CONFIG.toml``."""
    monkeypatch.setattr(commands, "matmul_gflops", lambda: 100.0)
    config = tmp_path / "tiny.toml"
    config.write_text('method = "rdsr"\nname = "tiny"\n[model]\nscale = 2\nchannels = 8\n'
                      'blocks = 1\n')
    code, out, _ = _run(capsys, "bench", "-n", str(config), "--sizes", "16", "--repeats", "1",
                        "--threads", "1")
    assert code == 0
    assert f"`{config} (random weights)`" in out and "| 16->32 |" in out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clean_error(tmp_path, capsys):
    code, _, err = _run(capsys, "upscale", "-i", tmp_path, "-o", tmp_path / "o", "--device", "cuda")
    assert code == 2 and "CUDA" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["upscale", "eval", "bench"])
def test_sampling_steps_flag_and_its_old_spelling(command: str) -> None:
    extra = ["-i", "x.png"] if command == "upscale" else []
    for flag in ("--sampling-steps", "--steps"):
        args = build_parser().parse_args([command, *extra, flag, "3"])
        assert args.sampling_steps == 3 and args.dtype == "fp32" and not args.self_ensemble
    assert build_parser().parse_args([command, *extra, "--dtype", "bf16"]).dtype == "bf16"
    assert commands._options(build_parser().parse_args([command, *extra, "--self-ensemble"])
                             ).self_ensemble


# ----------------------------------------------------------------------------- bad arguments


def _bad_argument_cases(tmp: Path, image: Path, config: Path) -> list[list[str]]:
    """Zero, negative, huge, NaN and non-numeric values for each flag; missing, wrong-kind
    and unwritable paths; an unknown model; bad ``--set`` values; an empty folder."""
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    blocker = tmp / "a_file"
    blocker.write_text("x")
    up = ["upscale", "-i", str(image), "-o", str(tmp / "out"), "-n", "bicubic"]
    cases = [up[:-2] + ["-n", "no-such-model"],
             ["upscale", "-i", str(tmp / "missing.png"), "-o", str(tmp / "out")],
             ["upscale", "-i", str(empty), "-o", str(tmp / "out"), "-n", "bicubic"],
             ["upscale", "-i", str(image), "-o", str(blocker), "-n", "bicubic"],
             ["upscale", "-i", str(image), "-o", str(blocker / "sub"), "-n", "bicubic"],
             up + ["--tile", "8", "--tile-overlap", "5"],
             up + ["--tile", "10"],  # bicubic's own overlap of 8 needs 16
             ["eval", "-n", "bicubic", "--data", str(tmp / "missing")],
             ["eval", "-n", "bicubic", "--scale", "5"],
             ["eval", "-n", "bicubic", "--degradation", "jpeg5"],
             ["eval", "-n", "bicubic", "--write-lr", str(tmp / "lr")],
             ["serve", "--models", "nope"], ["serve", "--port", "0"], ["serve", "--port", "x"],
             ["serve", "--max-megapixels", "0"], ["serve", "--workers", "-1"],
             ["export", "-n", "bicubic", "-o", str(tmp / "model.txt")],
             ["train", str(tmp / "missing.toml")]]
    numbers = {"-s": ["0", "-1", "17", "1e9", "nan", "inf", "x"],
               "--tile": ["-1", "1e9", "99999", "x", "nan"],
               "--tile-overlap": ["-1", "x", "99999"],
               "--sampling-steps": ["0", "-1", "1001", "x", "nan"], "--steps": ["0"],
               "--seed": ["-1", "x", str(2**64), "1.5"],
               "--threads": ["0", "-1", "x", "100000"]}
    for flag, values in numbers.items():
        cases += [up + [flag, v] for v in values]
    cases += [["bench", "-n", "bicubic", flag, v]
              for flag, values in {"--sizes": ["0", "-5", "x", "", "128,0", "99999"],
                                   "--repeats": ["0", "-1", "x"],
                                   "--threads": ["0", "-1"]}.items() for v in values]
    cases += [["export", "-n", "bicubic", "-o", str(tmp / "m.onnx"), "--tile", v]
              for v in ("0", "-1", "x", "100000")]
    cases += [["train", str(config), "--out", str(tmp / "run"), "--set", s]
              for s in ("prior.batch_size=0", "prior.checkpoint_every=0", "prior.iterations=-5",
                        "prior.lr=nan", "prior.lr=-1", "prior.iterations=abc",
                        "prior.ema_decay=1.5", "model.no_such_key=1", "nosuchtable.x=1",
                        "novalue")]
    cases += [["train", str(config), "--stop-at", v] for v in ("0", "-1", "x")]
    return cases


def test_every_bad_argument_is_one_error_line_exit_2_and_writes_nothing(
        tmp_path, mixed_dir, train_folder, capsys):
    from .conftest import tiny_rdsr_toml

    config = tmp_path / "tiny.toml"
    config.write_text(tiny_rdsr_toml(train_folder))
    cases = _bad_argument_cases(tmp_path, mixed_dir / "rgba.png", config)
    before = sorted(tmp_path.rglob("*"))
    for argv in cases:
        with pytest.raises(SystemExit) as exit_:
            raise SystemExit(main(argv))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exit_.value.code == 2, (argv, err)
        assert len(lines) == 1 and "error: " in lines[0], (argv, err)
        assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no folder made


def test_ignored_flags_get_one_warning(mixed_dir, tmp_path, capsys):
    code, _, err = _run(capsys, "upscale", "-i", mixed_dir / "rgba.png", "-o", tmp_path,
                        "-n", "bicubic", "--steps", "4", "--seed", "3")
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "--sampling-steps is ignored" in warnings[0] and "--seed is ignored" in warnings[1]
    code, _, err = _run(capsys, "upscale", "-i", mixed_dir / "rgba.png", "-o", tmp_path,
                        "-n", "bicubic", "--suffix", "again")
    assert code == 0 and "warning" not in err


def test_a_compressed_jpeg_gets_one_note_naming_the_real_photo_model(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    pic = Picture(np.random.default_rng(0).random((H, W, 3), np.float32), None, 8)
    for name, quality in (("a.jpg", 60), ("b.jpg", 50), ("c.jpg", 95)):
        write_image(folder / name, pic, quality=quality)

    def notes(model: str, src: Path) -> list[str]:
        out = tmp_path / f"out-{model}-{src.name}"
        code, _, err = _run(capsys, "upscale", "-i", src, "-o", out, "-n", model, "-q")
        assert code == 0
        return [line for line in err.splitlines() if line.startswith("note:")]

    note = notes("rdsr-x4", folder)  # trained on clean input: once per run, the first file
    assert len(note) == 1 and "a.jpg" in note[0] and "quality 60" in note[0]
    assert "-n rdsr-x4-real" in note[0]
    assert notes("rdsr-x4", folder / "c.jpg") == []  # quality 95: a camera's, no blocks
    assert notes("rdsr-x4-real", folder) == []  # trained for compressed photos
    assert notes("bicubic", folder) == []  # interpolation sharpens nothing


def test_upscale_help_lists_the_models_and_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "rdsr-x4 (default)" in text and "bicubic = bicubic-x4" in text
    for flag in ("--tile", "--tile-overlap", "--seed", "--ext", "--suffix", "--threads"):
        assert flag in text
    assert "(default: results)" in text and "(default: auto)" in text


# ----------------------------------------------------------------------------- output safety


def _photos(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(folder / name)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(("names", "extra", "why"), [
    (["a.png", "a.PNG"], [], "would both be written to"),
    (["b.png", "b.jpg"], ["--ext", "png"], "would both be written to"),
    (["c.png"], ["--suffix", ""], "an input"),  # -o is the input folder
    (["d.jpg", "d.png"], ["--suffix", "", "--ext", "png"], "an input"),  # d.jpg -> d.png
])
def test_outputs_never_replace_inputs_or_each_other(tmp_path, capsys, names, extra, why):
    folder = _photos(tmp_path / "in", names)
    if len({n.lower() for n in names}) < len(names) and len(list(folder.iterdir())) < len(names):
        pytest.skip("this file system folds case: a.png and a.PNG are one file")
    before = _snapshot(folder)
    out = folder if "an input" in why else tmp_path / "out"
    code, _, err = _run(capsys, "upscale", "-i", folder, "-o", out, "-n", "bicubic", *extra)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1
    assert _snapshot(folder) == before
    assert not (tmp_path / "out").exists()


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    folder = _photos(tmp_path / "in", ["e.png", "f.png"])
    out = tmp_path / "out"
    assert _run(capsys, "upscale", "-i", folder, "-o", out, "-n", "bicubic")[0] == 0
    (out / "e_out.png").write_bytes(b"mine")
    code, _, err = _run(capsys, "upscale", "-i", folder, "-o", out, "-n", "bicubic")
    assert code == 2 and "e_out.png and 1 more already exist(s): add --overwrite" in err
    assert (out / "e_out.png").read_bytes() == b"mine"
    code, _, _ = _run(capsys, "upscale", "-i", folder, "-o", out, "-n", "bicubic", "--overwrite")
    assert code == 0 and read_image(out / "e_out.png").pixels.shape == (4 * H, 4 * W, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_glibc_keeps_freed_buffers_unless_told_not_to(monkeypatch):
    import platform

    from fastdiffsr.cli import keep_freed_buffers

    monkeypatch.setenv("FASTDIFFSR_MALLOC", "system")
    assert keep_freed_buffers() is False
    monkeypatch.delenv("FASTDIFFSR_MALLOC")
    assert keep_freed_buffers() is (platform.libc_ver()[0] == "glibc")
