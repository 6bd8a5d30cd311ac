"""Tests for fastdiffsr.imageio (all files are made in tmp_path)."""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiffsr import imageio
from fastdiffsr.imageio import (
    SUPPORTED_SUFFIXES,
    ImageReadError,
    Picture,
    is_image_file,
    picture_to_tensor,
    read_image,
    tensor_to_pixels,
    write_image,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _u8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _u16(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    arr = _rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)
    arr.flat[0], arr.flat[-1] = 0, 65535
    return arr


def _smooth(h: int, w: int, c: int) -> np.ndarray:
    """Smooth float image in [0, 1] (survives lossy codecs well)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [0.5 + 0.4 * np.sin(x / 7 + k) * np.cos(y / 9 - k) for k in range(c)]
    return np.stack(chans, axis=2).astype(np.float32)


def _as_u16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 65535).astype(np.uint16)


def _as_u8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255).astype(np.uint8)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _ihdr(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR."""
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, color, interlace


def _ref_filter(samples: np.ndarray, ftypes: list[int]) -> bytes:
    """Independent, naive byte-by-byte PNG filter encoder (for 16-bit samples)."""
    h, w, c = samples.shape
    bpp = 2 * c
    rows = [bytes(samples[y].astype(">u2").tobytes()) for y in range(h)]
    out = bytearray()
    prev = bytes(len(rows[0]))
    for row, ft in zip(rows, ftypes, strict=True):
        out.append(ft)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            if ft == 0:
                pred = 0
            elif ft == 1:
                pred = a
            elif ft == 2:
                pred = b
            elif ft == 3:
                pred = (a + b) // 2
            else:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            out.append((x - pred) % 256)
        prev = row
    return bytes(out)


def _png16_bytes(
    samples: np.ndarray,
    ftypes: list[int],
    extra: bytes = b"",
    interlace: int = 0,
) -> bytes:
    h, w, c = samples.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, interlace)
    idat = zlib.compress(_ref_filter(samples, ftypes))
    return PNG_SIG + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# --------------------------------------------------------------------------- basics


def test_supported_suffixes_and_is_image_file() -> None:
    assert set(SUPPORTED_SUFFIXES) == {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff",
                                       ".avif", ".heic", ".heif"}
    assert is_image_file("a/b/c.PNG")
    assert is_image_file(Path("x.tiff"))
    assert not is_image_file("x.gif")
    assert not is_image_file("png")


def test_picture_properties_and_validation() -> None:
    pic = Picture(np.zeros((4, 5, 1), np.float64), None, 8)
    assert pic.pixels.dtype == np.float32
    assert (pic.height, pic.width, pic.is_gray, pic.has_alpha) == (4, 5, True, False)
    pic = Picture(np.zeros((4, 5, 3)), np.ones((4, 5)), 16)
    assert not pic.is_gray and pic.has_alpha and pic.alpha.dtype == np.float32
    assert Picture(np.zeros((2, 3))).pixels.shape == (2, 3, 1)
    with pytest.raises(ValueError):
        Picture(np.zeros((4, 5, 4)))
    with pytest.raises(ValueError):
        Picture(np.zeros((4, 5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError):
        Picture(np.zeros((4, 5, 3)), None, 12)


# --------------------------------------------------------------------------- 8-bit PNG


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_png_8bit_roundtrip(tmp_path: Path, mode: str, channels: int) -> None:
    arr = _u8((9, 13, channels), seed=channels)
    src = tmp_path / f"src_{mode}.png"
    Image.fromarray(arr[:, :, 0] if channels == 1 else arr).save(src)
    pic = read_image(src)
    color = 1 if channels <= 2 else 3
    assert pic.bit_depth == 8
    assert pic.pixels.dtype == np.float32 and pic.pixels.shape == (9, 13, color)
    np.testing.assert_array_equal(_as_u8(pic.pixels), arr[:, :, :color])
    if channels in (2, 4):
        assert pic.alpha is not None and pic.alpha.dtype == np.float32
        np.testing.assert_array_equal(_as_u8(pic.alpha), arr[:, :, -1])
    else:
        assert pic.alpha is None

    out = write_image(tmp_path / "out" / "deep" / f"{mode}.png", pic)
    assert out.exists()
    with Image.open(out) as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.asarray(im).reshape(arr.shape), arr)
    again = read_image(out)
    np.testing.assert_array_equal(again.pixels, pic.pixels)
    assert again.bit_depth == 8


def test_png_palette_without_transparency(tmp_path: Path) -> None:
    rgb = Image.fromarray(_u8((10, 12, 3), seed=3)).quantize(colors=16)
    assert rgb.mode == "P"
    src = tmp_path / "pal.png"
    rgb.save(src)
    pic = read_image(src)
    assert pic.alpha is None and pic.pixels.shape == (10, 12, 3) and pic.bit_depth == 8
    np.testing.assert_array_equal(_as_u8(pic.pixels), np.asarray(rgb.convert("RGB")))
    out = write_image(tmp_path / "pal_out.png", pic)
    np.testing.assert_array_equal(read_image(out).pixels, pic.pixels)


def test_png_palette_with_transparency(tmp_path: Path) -> None:
    idx = (np.arange(8 * 6).reshape(6, 8) % 4).astype(np.uint8)
    im = Image.fromarray(idx).convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * (256 - 4) * 3)
    src = tmp_path / "pal_t.png"
    im.save(src, transparency=2)
    pic = read_image(src)
    assert pic.pixels.shape == (6, 8, 3)
    assert pic.alpha is not None
    np.testing.assert_array_equal(pic.alpha, (idx != 2).astype(np.float32))
    np.testing.assert_array_equal(
        _as_u8(pic.pixels[idx == 0]), [[255, 0, 0]] * int((idx == 0).sum())
    )
    out = write_image(tmp_path / "pal_t_out.png", pic)
    with Image.open(out) as back:
        assert back.mode == "RGBA"
    np.testing.assert_array_equal(read_image(out).alpha, pic.alpha)


def test_png_rgb_with_trns_key_gets_alpha(tmp_path: Path) -> None:
    arr = _u8((5, 6, 3), seed=4)
    arr[0, 0] = (1, 2, 3)
    src = tmp_path / "key.png"
    Image.fromarray(arr).save(src, transparency=(1, 2, 3))
    pic = read_image(src)
    assert pic.alpha is not None and pic.alpha[0, 0] == 0.0 and pic.alpha[1, 1] == 1.0


def test_png_1bit(tmp_path: Path) -> None:
    bits = _u8((7, 9)) > 127
    src = tmp_path / "bits.png"
    Image.fromarray(bits).save(src)
    with Image.open(src) as im:
        assert im.mode == "1"
    pic = read_image(src)
    assert pic.is_gray and pic.bit_depth == 8 and pic.alpha is None
    np.testing.assert_array_equal(pic.pixels[:, :, 0], bits.astype(np.float32))


# --------------------------------------------------------------------------- 16-bit PNG


def test_png_16bit_gray_roundtrip(tmp_path: Path) -> None:
    arr = _u16((11, 7), seed=5)
    src = tmp_path / "g16.png"
    Image.fromarray(arr).save(src)
    pic = read_image(src)
    assert pic.bit_depth == 16 and pic.is_gray and pic.alpha is None
    np.testing.assert_array_equal(_as_u16(pic.pixels[:, :, 0]), arr)
    out = write_image(tmp_path / "g16_out.png", pic)
    assert _ihdr(out.read_bytes())[2:4] == (16, 0)
    with Image.open(out) as im:
        assert im.mode in ("I;16", "I")
        np.testing.assert_array_equal(np.asarray(im), arr)
    again = read_image(out)
    assert again.bit_depth == 16
    np.testing.assert_array_equal(_as_u16(again.pixels[:, :, 0]), arr)


@pytest.mark.parametrize("channels", [3, 4])
def test_png_16bit_color_roundtrip(tmp_path: Path, channels: int) -> None:
    arr = _u16((13, 17, channels), seed=channels)
    alpha = arr[:, :, 3] / 65535.0 if channels == 4 else None
    pic = Picture(arr[:, :, :3] / 65535.0, alpha, 16)
    out = write_image(tmp_path / f"c16_{channels}.png", pic)
    assert _ihdr(out.read_bytes()) == (17, 13, 16, 6 if channels == 4 else 2, 0)
    with Image.open(out) as im:  # Pillow agrees it is a valid PNG of the right size/kind
        im.load()
        assert im.size == (17, 13) and im.mode == ("RGBA" if channels == 4 else "RGB")

    back = read_image(out)
    assert back.bit_depth == 16 and back.pixels.shape == (13, 17, 3)
    np.testing.assert_array_equal(_as_u16(back.pixels), arr[:, :, :3])
    if channels == 4:
        np.testing.assert_array_equal(_as_u16(back.alpha), arr[:, :, 3])
    else:
        assert back.alpha is None

    out2 = write_image(tmp_path / f"c16_{channels}_again.png", back)
    back2 = read_image(out2)
    np.testing.assert_array_equal(_as_u16(back2.pixels), arr[:, :, :3])
    assert out2.read_bytes() == out.read_bytes()


def test_png_16bit_gray_alpha_roundtrip(tmp_path: Path) -> None:
    arr = _u16((6, 5, 2), seed=9)
    pic = Picture(arr[:, :, :1] / 65535.0, arr[:, :, 1] / 65535.0, 16)
    out = write_image(tmp_path / "la16.png", pic)
    assert _ihdr(out.read_bytes())[2:4] == (16, 4)
    back = read_image(out)
    assert back.is_gray and back.bit_depth == 16
    np.testing.assert_array_equal(_as_u16(back.pixels[:, :, 0]), arr[:, :, 0])
    np.testing.assert_array_equal(_as_u16(back.alpha), arr[:, :, 1])


def test_png_16bit_pillow_matches_8bit_high_bytes(tmp_path: Path) -> None:
    """Our reader and Pillow's 8-bit reduction of the same file agree on the high byte."""
    arr = _u16((8, 9, 3), seed=2)
    out = write_image(tmp_path / "hb.png", Picture(arr / 65535.0, None, 16))
    with Image.open(out) as im:
        eight = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(eight, (arr >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    "ftypes",
    [[1] * 6, [2] * 6, [3] * 6, [4] * 6, [0, 1, 2, 3, 4, 4], [4, 3, 2, 1, 0, 3]],
    ids=["sub", "up", "average", "paeth", "mixed", "mixed2"],
)
@pytest.mark.parametrize("channels", [3, 4])
def test_png16_reader_all_filters(tmp_path: Path, ftypes: list[int], channels: int) -> None:
    arr = _u16((6, 7, channels), seed=sum(ftypes) + channels)
    arr[2] = arr[1]  # some structure so predictors hit ties
    arr[:, 3] = 40000
    path = tmp_path / "filt.png"
    path.write_bytes(_png16_bytes(arr, ftypes))
    pic = read_image(path)
    assert pic.bit_depth == 16
    np.testing.assert_array_equal(_as_u16(pic.pixels), arr[:, :, :3])
    if channels == 4:
        np.testing.assert_array_equal(_as_u16(pic.alpha), arr[:, :, 3])


def test_png16_with_data_that_does_not_match_its_header_is_a_clean_error(tmp_path: Path) -> None:
    """Declared interlaced, stored plain: libpng's complaint, as ImageReadError."""
    path = tmp_path / "interlaced.png"
    path.write_bytes(_png16_bytes(_u16((4, 4, 3)), [0] * 4, interlace=1))
    with pytest.raises(ImageReadError, match="interlaced.png"):
        read_image(path)


def test_png16_trns_key(tmp_path: Path) -> None:
    arr = _u16((4, 5, 3), seed=1)
    arr[1, 2] = (7, 8, 9)
    path = tmp_path / "key16.png"
    path.write_bytes(_png16_bytes(arr, [1] * 4, extra=_chunk(b"tRNS", struct.pack(">3H", 7, 8, 9))))
    pic = read_image(path)
    assert pic.alpha is not None
    expected = np.ones((4, 5), np.float32)
    expected[1, 2] = 0
    np.testing.assert_array_equal(pic.alpha, expected)


# --------------------------------------------------------------------------- EXIF


def test_jpeg_exif_orientation_6_transposes(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    pic = read_image(path)
    assert pic.pixels.shape == (40, 20, 3)
    # orientation 6 = rotate 90 degrees clockwise for display: left half -> top half
    assert pic.pixels[:20].mean() > 0.9 and pic.pixels[20:].mean() < 0.1


_PIL_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow(orientation: int) -> None:
    arr = _u8((5, 7))
    expected = Image.fromarray(arr)
    if orientation in _PIL_TRANSPOSE:
        expected = expected.transpose(_PIL_TRANSPOSE[orientation])
    np.testing.assert_array_equal(imageio._orient(arr, orientation), np.asarray(expected))


def test_png16_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    arr = _u16((4, 6, 3), seed=8)
    path = tmp_path / "exif16.png"
    path.write_bytes(_png16_bytes(arr, [2] * 4, extra=_chunk(b"eXIf", exif.tobytes())))
    pic = read_image(path)
    assert pic.pixels.shape == (6, 4, 3)
    np.testing.assert_array_equal(_as_u16(pic.pixels), np.rot90(arr, 1))


# --------------------------------------------------------------------------- other formats


def test_jpeg_gray_stays_gray(tmp_path: Path) -> None:
    pic = Picture(_smooth(24, 32, 1), None, 8)
    out = write_image(tmp_path / "g.jpg", pic, quality=98)
    with Image.open(out) as im:
        assert im.mode == "L"
    back = read_image(out)
    assert back.is_gray and back.bit_depth == 8
    assert np.abs(back.pixels - pic.pixels).max() < 0.05


def test_jpeg_drops_alpha_and_16bit(tmp_path: Path) -> None:
    pic = Picture(_smooth(16, 16, 3), np.full((16, 16), 0.5), 16)
    out = write_image(tmp_path / "a.jpeg", pic)
    back = read_image(out)
    assert back.alpha is None and back.bit_depth == 8 and back.pixels.shape == (16, 16, 3)
    assert np.abs(back.pixels - pic.pixels).mean() < 0.02


@pytest.mark.parametrize("quality", [5, 30, 60, 75, 90, 100])
def test_jpeg_quality_is_read_back(tmp_path: Path, quality: int) -> None:
    pic = Picture(_smooth(24, 32, 3), None, 8)
    assert read_image(write_image(tmp_path / "q.jpg", pic, quality=quality)).meta.jpeg_quality \
        == quality
    assert read_image(write_image(tmp_path / "q.png", pic)).meta.jpeg_quality is None


def test_jpeg_quality_of_a_camera_mpo_file(tmp_path: Path) -> None:
    """Some cameras save MPO (a JPEG with further pictures) under .jpg."""
    img = Image.fromarray((_smooth(24, 32, 3) * 255).astype(np.uint8))
    img.save(tmp_path / "phone.jpg", "MPO", quality=60, save_all=True, append_images=[img])
    assert read_image(tmp_path / "phone.jpg").meta.jpeg_quality == 60


def test_jpeg_quality_of_other_tables_is_the_nearest(tmp_path: Path) -> None:
    """An encoder's own tables (Pillow's Photoshop-like presets) get a quality near theirs."""
    path = tmp_path / "preset.jpg"
    Image.fromarray((_smooth(24, 32, 3) * 255).astype(np.uint8)).save(path, quality="web_low")
    assert 50 <= read_image(path).meta.jpeg_quality <= 70  # web_low is Photoshop's 'low'


def test_jpeg_cmyk_reads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    pic = read_image(path)
    assert pic.pixels.shape == (6, 8, 3) and pic.alpha is None
    assert pic.pixels[..., 0].mean() > 0.9 and pic.pixels[..., 1:].mean() < 0.1


def test_webp_rgba_roundtrip(tmp_path: Path) -> None:
    alpha = np.zeros((16, 20), np.float32)
    alpha[:, 10:] = 1.0
    pic = Picture(_smooth(16, 20, 3), alpha, 8)
    out = write_image(tmp_path / "x.webp", pic, quality=100)
    back = read_image(out)
    assert back.pixels.shape == (16, 20, 3) and back.alpha is not None
    np.testing.assert_array_equal(back.alpha, alpha)
    assert np.abs(back.pixels - pic.pixels)[:, 10:].mean() < 0.03


def test_webp_gray_written_as_rgb(tmp_path: Path) -> None:
    pic = Picture(_smooth(12, 12, 1), None, 8)
    back = read_image(write_image(tmp_path / "g.webp", pic, quality=100))
    assert back.pixels.shape == (12, 12, 3)
    assert np.abs(back.pixels - pic.pixels).mean() < 0.03


@pytest.mark.parametrize("channels", [1, 3])
def test_bmp_roundtrip_exact(tmp_path: Path, channels: int) -> None:
    arr = _u8((7, 11, channels), seed=channels)
    pic = Picture(arr / 255.0, np.ones((7, 11)), 8)
    out = write_image(tmp_path / "x.bmp", pic)
    back = read_image(out)
    assert back.alpha is None  # BMP output drops alpha
    assert back.pixels.shape == (7, 11, channels)
    np.testing.assert_array_equal(_as_u8(back.pixels), arr)


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_8bit_rgba_roundtrip(tmp_path: Path, suffix: str) -> None:
    arr = _u8((9, 10, 4), seed=7)
    pic = Picture(arr[:, :, :3] / 255.0, arr[:, :, 3] / 255.0, 8)
    back = read_image(write_image(tmp_path / f"x{suffix}", pic))
    assert back.bit_depth == 8
    np.testing.assert_array_equal(_as_u8(back.pixels), arr[:, :, :3])
    np.testing.assert_array_equal(_as_u8(back.alpha), arr[:, :, 3])


def test_tiff_16bit_gray(tmp_path: Path) -> None:
    arr = _u16((9, 10), seed=6)
    src = tmp_path / "g16.tif"
    Image.fromarray(arr).save(src)
    pic = read_image(src)
    assert pic.bit_depth == 16 and pic.is_gray
    np.testing.assert_array_equal(_as_u16(pic.pixels[:, :, 0]), arr)
    out = write_image(tmp_path / "g16_out.tiff", pic)
    with Image.open(out) as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(_as_u16(read_image(out).pixels[:, :, 0]), arr)


# --------------------------------------------------------------------------- errors


def _assert_read_error(path: Path) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert path.name in str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


def test_error_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty_file.png"
    path.write_bytes(b"")
    _assert_read_error(path)


@pytest.mark.parametrize("kind", ["rgb8", "rgb16"])
def test_error_truncated_png(tmp_path: Path, kind: str) -> None:
    full = tmp_path / "full.png"
    if kind == "rgb8":
        Image.fromarray(_u8((64, 64, 3))).save(full)
    else:
        write_image(full, Picture(_u16((64, 64, 3)) / 65535.0, None, 16))
    data = full.read_bytes()
    cut = tmp_path / f"cut_{kind}.png"
    cut.write_bytes(data[: len(data) // 2])
    err = _assert_read_error(cut)
    assert err.__cause__ is not None


def test_error_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(os.urandom(1000))
    _assert_read_error(path)


def test_error_corrupt_png16_crc(tmp_path: Path) -> None:
    data = bytearray(_png16_bytes(_u16((3, 3, 3)), [0] * 3))
    data[40] ^= 0xFF  # inside IDAT
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    _assert_read_error(path)


def test_error_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    Image.new("L", (2, 2)).save(path)
    _assert_read_error(path)


def test_error_missing_file(tmp_path: Path) -> None:
    err = _assert_read_error(tmp_path / "does_not_exist.png")
    assert isinstance(err.__cause__, FileNotFoundError)


# --------------------------------------------------------------------------- writing


def test_write_quantises_round_to_nearest(tmp_path: Path) -> None:
    vals = np.array([[0.2, 0.6, 254.4, 254.6, -3.0, 400.0]], np.float32) / 255.0
    out = write_image(tmp_path / "q.png", Picture(vals[:, :, None], None, 8))
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im)[0], [0, 1, 254, 255, 0, 255])
    vals16 = np.array([[0.4, 0.5001, 65534.6, 70000.0]], np.float32) / 65535.0
    out16 = write_image(tmp_path / "q16.png", Picture(vals16[:, :, None], None, 16))
    with Image.open(out16) as im:
        np.testing.assert_array_equal(np.asarray(im)[0], [0, 1, 65535, 65535])


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(imageio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, Picture(np.zeros((2, 2, 3)), None, 8))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.png"
    write_image(target, Picture(np.zeros((2, 2, 3)), None, 8))
    result = write_image(str(target), Picture(np.ones((3, 4, 3)), None, 8))
    assert result == target
    assert read_image(target).pixels.shape == (3, 4, 3)
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]


def test_write_rejects_bad_suffix_and_quality(tmp_path: Path) -> None:
    pic = Picture(np.zeros((2, 2, 3)), None, 8)
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.gif", pic)
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.jpg", pic, quality=0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- tensors


def test_tensor_conversions() -> None:
    pixels = _smooth(5, 6, 3)
    t = picture_to_tensor(pixels)
    assert t.shape == (1, 3, 5, 6) and t.dtype == torch.float32
    torch.testing.assert_close(t[0, 1], torch.from_numpy(pixels[:, :, 1]))
    t[0, 0, 0, 0] = 7.0
    assert pixels[0, 0, 0] != 7.0  # a copy, not a view

    back = tensor_to_pixels(t)
    assert back.shape == (5, 6, 3) and back.dtype == np.float32
    assert back[0, 0, 0] == 1.0  # clamped
    np.testing.assert_array_equal(back[1:, 1:], pixels[1:, 1:])
    assert tensor_to_pixels(t[0]).shape == (5, 6, 3)

    gray = picture_to_tensor(np.zeros((4, 3, 1), np.uint8))
    assert gray.shape == (1, 1, 4, 3) and gray.dtype == torch.float32

    weird = torch.tensor([[[-1.0, float("nan"), 2.0]]])
    np.testing.assert_array_equal(tensor_to_pixels(weird)[0, :, 0], [0.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        tensor_to_pixels(torch.zeros(2, 3, 4, 4))


def test_tensor_to_pixels_does_not_alias() -> None:
    t = torch.full((1, 3, 2, 2), 0.5)
    arr = tensor_to_pixels(t)
    arr[...] = 0.0
    assert float(t.min()) == 0.5


# --------------------------------------------------------------------------- bounds


def test_a_declared_size_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 10000 x 10000 JPEG would decode to 300 MB: refused from its header, naming it."""
    path = tmp_path / "big.png"
    Image.new("L", (10000, 10000)).save(path)  # a few kB on disk
    with pytest.raises(ImageReadError, match=r"big.png: declares 10000 x 10000 pixels \(100.0 MP"):
        read_image(path)
    assert read_image(path, max_pixels=10**8).pixels.shape == (10000, 10000, 1)


def test_a_png16_header_declaring_a_huge_size_is_refused(tmp_path: Path) -> None:
    """A 16-bit PNG whose IHDR says 1 x 134,228,553: refused before libpng inflates anything."""
    data = bytearray(_png16_bytes(_u16((1, 1, 3)), [0]))
    data[16:20] = struct.pack(">I", 134_228_553)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "tall.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="134,228,553|134228553 x 1|1 x 134228553"):
        read_image(path)


def test_png16_bomb_does_not_inflate(tmp_path: Path) -> None:
    """1 x 1 declared, 3 MB of zeros compressed behind it: libpng reads one row and stops."""
    import resource

    samples = _u16((1, 1, 3))
    bomb = zlib.compress(b"\0" * (200 * 2**20), 9)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0)
    data = (PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(
        b"\0" + samples.astype(">u2").tobytes()) + bomb) + _chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with contextlib.suppress(ImageReadError):  # a clean refusal is as good
        read_image(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB


# --------------------------------------------------------------------------- metadata


@functools.cache
def _profile() -> bytes:
    """An sRGB ICC profile, made once: lcms stamps each new profile with the time of day, so two
    made a second apart differ (the test that compared two of them failed now and then)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_jpeg_photo_keeps_profile_exif_and_dpi_with_orientation_applied_once(tmp_path) -> None:
    """An iPhone-style JPEG: ICC profile, EXIF orientation 6, camera tags, 72 dpi."""
    from fastdiffsr.api import upscale

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Apple"
    path = tmp_path / "IMG_0001.jpg"
    Image.fromarray(arr).save(path, exif=exif, icc_profile=_profile(), dpi=(72, 72), quality=95)
    out = write_image(tmp_path / "up.jpg", upscale(path, "bicubic"))
    with Image.open(out) as im:
        assert im.size == (80, 160)  # rotated once: portrait, x4
        assert im.info["icc_profile"] == _profile()
        assert im.getexif()[0x0112] == 1 and im.getexif()[0x010F] == "Apple"
        assert tuple(round(d) for d in im.info["dpi"]) == (288, 288)  # same print size
    again = read_image(out)
    assert again.pixels.shape == (160, 80, 3)  # orientation 1: not rotated a second time
    assert again.pixels[:80].mean() > 0.9 and again.pixels[80:].mean() < 0.1


@pytest.mark.parametrize("depth", [8, 16])
def test_png_keeps_profile_text_dpi_and_exif(tmp_path: Path, depth: int) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "harbour")
    info.add_itxt("Comment", "\u00e9t\u00e9")
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    src = tmp_path / "src.png"
    Image.fromarray(_u8((6, 5, 3))).save(src, pnginfo=info, icc_profile=_profile(),
                                          dpi=(300, 300), exif=exif)
    pic = read_image(src)
    assert pic.meta.text == {"Title": "harbour", "Comment": "\u00e9t\u00e9"}
    pic = Picture(pic.pixels, None, depth, pic.meta)
    out = write_image(tmp_path / f"out{depth}.png", pic)
    with Image.open(out) as im:
        im.load()
        assert im.info["icc_profile"] == _profile()
        assert tuple(round(d) for d in im.info["dpi"]) == (300, 300)
        assert im.text == {"Title": "harbour", "Comment": "\u00e9t\u00e9"}
        assert im.getexif()[0x010F] == "Canon"
    assert read_image(out).bit_depth == depth


def test_avif_roundtrip(tmp_path: Path) -> None:
    pic = Picture(_smooth(16, 24, 3), _smooth(16, 24, 1)[:, :, 0], 8)
    back = read_image(write_image(tmp_path / "x.avif", pic, quality=100))
    assert back.alpha is not None and np.abs(back.pixels - pic.pixels).max() < 0.1


def test_heic_reads_through_the_photos_extra(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif", reason="the photos extra is not installed")
    path = tmp_path / "phone.heic"
    pillow_heif.from_pillow(Image.fromarray(_as_u8(_smooth(16, 24, 3)))).save(path, quality=95)
    pic = read_image(path)
    assert pic.pixels.shape == (16, 24, 3)
    assert np.abs(pic.pixels - _smooth(16, 24, 3)).mean() < 0.05
