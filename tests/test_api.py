"""Tests for the Python API (``fastdiffsr.upscale`` and the package's top-level names)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fastdiffsr
from fastdiffsr import Picture, available_models, load_model, read_image, upscale, write_image
from fastdiffsr.api import upscale_picture
from fastdiffsr.imageio import picture_to_tensor, quantize
from fastdiffsr.resize import imresize
from fastdiffsr.upscaler import Cancelled, OptionError, UpscaleOptions, Upscaler

H, W = 30, 23


@pytest.fixture(scope="module")
def bicubic() -> Upscaler:
    return load_model("bicubic")


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).random((H, W, 3), np.float32)


def test_top_level_names():
    """The public API the README documents."""
    assert fastdiffsr.__version__ == "0.1.0"
    assert set(fastdiffsr.__all__) == {
        "Cancelled", "DEFAULT_MODEL", "ImageReadError", "ModelFileError", "OptionError",
        "Picture", "UpscaleOptions", "__version__", "available_models", "load_model",
        "read_image", "upscale", "write_image"}
    assert fastdiffsr.load_model is load_model and fastdiffsr.upscale is upscale
    assert {"bicubic-x2", "bicubic-x3", "bicubic-x4"} <= set(available_models())
    for name in fastdiffsr.__all__:
        assert hasattr(fastdiffsr, name)


def test_picture_in_picture_out(bicubic, rgb):
    out = upscale(Picture(rgb), bicubic)
    assert isinstance(out, Picture)
    assert out.pixels.shape == (4 * H, 4 * W, 3) and out.bit_depth == 8 and out.alpha is None
    want = imresize(picture_to_tensor(rgb), 4).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out.pixels, want, atol=1e-6)


def test_model_by_name(rgb):
    assert upscale(Picture(rgb), "bicubic-x2").pixels.shape == (2 * H, 2 * W, 3)


def test_uint8_array(bicubic, rgb):
    arr = np.round(rgb * 255).astype(np.uint8)
    out = upscale(arr, bicubic)
    assert out.dtype == np.uint8 and out.shape == (4 * H, 4 * W, 3)


def test_uint16_array(bicubic, rgb):
    arr = np.round(rgb * 65535).astype(np.uint16)
    out = upscale(arr, bicubic)
    assert out.dtype == np.uint16 and out.shape == (4 * H, 4 * W, 3)
    assert (out.astype(np.int64) % 257 != 0).any()  # full 16-bit precision, not 8-bit levels


def test_float_array(bicubic, rgb):
    out = upscale(rgb, bicubic)
    assert out.dtype == np.float32 and out.shape == (4 * H, 4 * W, 3)
    assert out.min() >= 0 and out.max() <= 1


def test_gray_array(bicubic, rgb):
    out = upscale(np.round(rgb[..., 0] * 255).astype(np.uint8), bicubic)
    assert out.dtype == np.uint8 and out.shape == (4 * H, 4 * W)


def test_rgba_array_keeps_alpha(bicubic, rgb):
    arr = np.round(rgb * 255).astype(np.uint8)
    arr = np.concatenate([arr, np.full((H, W, 1), 128, np.uint8)], axis=2)
    out = upscale(arr, bicubic)
    assert out.shape == (4 * H, 4 * W, 4)
    assert (out[..., 3] == 128).all()  # constant alpha stays constant


def test_pil_rgb(bicubic, rgb):
    img = Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB")
    out = upscale(img, bicubic)
    assert isinstance(out, Image.Image)
    assert out.mode == "RGB" and out.size == (4 * W, 4 * H)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_pil_other_modes(bicubic, rgb, mode):
    img = Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB").convert(mode)
    out = upscale(img, bicubic)
    assert out.mode == mode and out.size == (4 * W, 4 * H)


def test_path(bicubic, rgb, tmp_path):
    path = write_image(tmp_path / "in.png", Picture(rgb, None, 16))
    out = upscale(path, bicubic)
    assert isinstance(out, Picture)
    assert out.pixels.shape == (4 * H, 4 * W, 3) and out.bit_depth == 16
    assert isinstance(upscale(str(path), bicubic), Picture)
    assert read_image(path).bit_depth == 16


def test_outscale(bicubic, rgb):
    out = upscale(Picture(rgb), bicubic, outscale=3.0)
    assert out.pixels.shape == (3 * H, 3 * W, 3)


def test_tiled_equals_untiled(bicubic, rgb):
    # Bicubic's kernel reaches 2 LR px each side of an output pixel. Tiling gives the outermost
    # guard = overlap // 4 LR px of each shared tile side (near-)zero weight, so the result is
    # exact when overlap // 4 >= 2, i.e. overlap >= 8; tiles are at least twice the overlap,
    # so tiles of 16 with overlap 8.
    full = upscale(rgb, bicubic)
    tiled = upscale(rgb, bicubic, tile=16, tile_overlap=8, batch_tiles=3)
    np.testing.assert_allclose(tiled, full, atol=1e-5)


def test_tiled_default_overlap_equals_untiled(bicubic, rgb):
    np.testing.assert_allclose(upscale(rgb, bicubic, tile=16), upscale(rgb, bicubic), atol=1e-5)


def test_unknown_option_names_the_valid_ones(bicubic, rgb):
    with pytest.raises(OptionError, match=r"unknown option 'scale' \(did you mean 'outscale'\?\)"
                                          r"; options: outscale, tile, .*dtype"):
        upscale(rgb, bicubic, scale=2)


@pytest.mark.parametrize("option", [
    {"outscale": 0}, {"outscale": float("nan")}, {"outscale": 1e9}, {"tile": -1},
    {"tile": 2.5}, {"tile_overlap": -1}, {"batch_tiles": 0}, {"sampling_steps": 0},
    {"seed": -1}, {"seed": 2**63}, {"memory_budget": 0}, {"dtype": "fp16"}, {"tile": True},
    {"self_ensemble": 1}])
def test_out_of_range_options_are_refused_by_name(bicubic, rgb, option):
    (name, value), = option.items()
    with pytest.raises(OptionError, match=f"option {name} must be"):
        upscale(rgb, bicubic, **option)


def test_a_plan_of_too_many_tiles_names_the_smallest_tile_that_works(bicubic):
    """A 5000 x 5000 LR image in 8 px tiles with overlap 4 would be 1,558,009 tiles."""
    import torch

    from fastdiffsr.upscaler import MAX_TILES, check_plan, tile_count

    with pytest.raises(OptionError, match="use a tile of at least 83") as err:
        check_plan(5000, 5000, 8, 4)
    assert "1,560,001 tiles" in str(err.value)
    assert tile_count(5000, 5000, 83, 4) <= MAX_TILES < tile_count(5000, 5000, 82, 4)
    with pytest.raises(OptionError, match="overlaps more than it advances"):
        upscale(torch.rand(1, 3, 40, 40)[0].permute(1, 2, 0).numpy(), bicubic, tile=10,
                tile_overlap=8)


def test_progress_reports_every_tile_and_can_cancel(bicubic, rgb):
    seen = []
    upscale(rgb, bicubic, tile=8, tile_overlap=4, batch_tiles=1,
            progress=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert total > 1 and seen == [(i, total) for i in range(1, total + 1)]
    calls = []
    with pytest.raises(Cancelled, match=f"after 2 of {total} tiles"):
        upscale(rgb, bicubic, tile=8, tile_overlap=4, batch_tiles=1,
                progress=lambda done, total: calls.append(done) or done < 2)
    assert calls == [1, 2]


def test_seed_and_sampling_steps_accepted(bicubic, rgb):
    out = upscale(rgb, bicubic, sampling_steps=3, seed=5)
    np.testing.assert_array_equal(out, upscale(rgb, bicubic))


def test_max_tile_caps_the_default_tile_not_the_users(monkeypatch):
    """A model's ``max_tile`` bounds the automatic tile; an explicit ``tile`` still wins."""
    import torch

    from fastdiffsr.tiling import tile_starts
    from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor

    model = load_model("bicubic")
    monkeypatch.setattr(model, "max_tile", 16)
    sizes: list[tuple[int, int]] = []
    forward = model.tile_forward
    def spy(x):
        sizes.append(tuple(x.shape[-2:]))
        return forward(x)

    monkeypatch.setattr(model, "tile_forward", spy)
    x = torch.rand(1, 3, 40, 40)
    upscale_tensor(model, x, UpscaleOptions(batch_tiles=1))
    assert set(sizes) == {(16, 16)}
    assert len(sizes) == len(tile_starts(40, 16, model.tile_overlap)) ** 2
    sizes.clear()
    upscale_tensor(model, x, UpscaleOptions(tile=40))
    assert sizes == [(40, 40)]


def test_bf16_option_runs_the_model_under_autocast():
    """``dtype="bf16"``: close to fp32, float32 out; another dtype is an error."""
    import torch

    from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor

    model, lr = load_model("rdsr-x4"), torch.rand(1, 3, 24, 24)
    a = upscale_tensor(model, lr)
    b = upscale_tensor(model, lr, UpscaleOptions(dtype="bf16"))
    assert b.dtype == torch.float32 and 0 < (a - b).abs().max() < 0.05
    with pytest.raises(ValueError, match="dtype"):
        upscale_tensor(model, lr, UpscaleOptions(dtype="fp16"))


def test_self_ensemble_commutes_with_every_turn_and_keeps_an_equivariant_model():
    """A tile function that is not rotation-equivariant (a random conv + pixel shuffle, with
    noise as a second input): its x8 ensemble is equivariant (turning the inputs turns the
    output, for all 8 turns); an equivariant function (nearest upsampling) is its own
    ensemble; ``upscale`` runs it with the option."""
    import torch

    from fastdiffsr.upscaler import self_ensemble, upscale_tensor

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 12, 3, padding=1)
    fn = lambda x, n: torch.pixel_shuffle(conv(torch.cat([x, n], 1)), 2)  # noqa: E731
    x, n = torch.rand(2, 3, 10, 10), torch.rand(2, 3, 10, 10)
    turn = lambda t, k, f: torch.rot90(t.flip(-1) if f else t, k, (2, 3))  # noqa: E731
    with torch.no_grad():
        ens = self_ensemble(fn)(x, n)
        assert (ens - fn(x, n)).abs().max() > 1e-2
        for k in range(4):
            for f in (False, True):
                torch.testing.assert_close(self_ensemble(fn)(turn(x, k, f), turn(n, k, f)),
                                           turn(ens, k, f))
    nearest = lambda x: torch.nn.functional.interpolate(x, scale_factor=2)  # noqa: E731
    torch.testing.assert_close(self_ensemble(nearest)(x), nearest(x))
    model, lr = load_model("rdsr-x4"), torch.rand(1, 3, 20, 17)
    a = upscale_tensor(model, lr, UpscaleOptions(self_ensemble=True))
    b = upscale_tensor(model, lr)
    assert a.shape == b.shape and 0 < (a - b).abs().mean() < 0.05


@pytest.mark.parametrize(("depth", "channels", "tile"), [(8, 3, 12), (16, 3, 0), (8, 1, 12),
                                                         (16, 1, 12)])
def test_levels_stream_the_same_pixels_the_float_path_gives(bicubic, rgb, depth, channels, tile):
    """The CLI's path (rows quantized as the tiles finish) equals quantizing the float
    output; gray stays gray."""
    pic = Picture(rgb[:, :, :channels], None, depth)
    opts = UpscaleOptions(tile=tile, tile_overlap=4 if tile else None)
    levels = upscale_picture(bicubic, pic, opts, levels=True)
    assert levels.pixels.dtype == (np.uint16 if depth == 16 else np.uint8)
    np.testing.assert_array_equal(levels.pixels,
                                  quantize(upscale_picture(bicubic, pic, opts).pixels, depth))


def test_levels_with_an_outscale_and_alpha(bicubic, rgb):
    pic = Picture(rgb, rgb[:, :, 0], 8)
    out = upscale_picture(bicubic, pic, UpscaleOptions(outscale=2.5), levels=True)
    ref = upscale_picture(bicubic, pic, UpscaleOptions(outscale=2.5))
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (75, 58, 3)
    np.testing.assert_array_equal(out.pixels, quantize(ref.pixels, 8))
    np.testing.assert_array_equal(out.alpha, ref.alpha)


@pytest.mark.parametrize(("depth", "suffix"), [(8, ".png"), (16, ".png"), (8, ".jpg"),
                                               (16, ".tif")])
def test_a_picture_of_levels_writes_the_same_file(rgb, tmp_path, depth, suffix):
    px = rgb[:, :, :1] if suffix == ".tif" else rgb
    floats = write_image(tmp_path / f"f{suffix}", Picture(px, None, depth))
    levels = write_image(tmp_path / f"l{suffix}", Picture(quantize(px, depth), None, depth))
    assert floats.read_bytes() == levels.read_bytes()
