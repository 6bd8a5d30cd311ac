"""Image files for fuzzing ``read_image``: every supported format, depth and mode, and the
mutations that break them (``tests/test_fuzz.py`` with Hypothesis, ``benchmarks/fuzz.py`` at
length). Encoders are Pillow's and imagecodecs' (16-bit colour PNG); nothing here decodes."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image

# (format, mode): what Pillow writes, plus "PNG16" for imagecodecs' 16-bit colour PNGs
KINDS: tuple[tuple[str, str], ...] = (
    ("PNG", "1"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "PT"), ("PNG", "RGB"),
    ("PNG", "RGBA"), ("PNG", "I;16"), ("PNG16", "LA"), ("PNG16", "RGB"), ("PNG16", "RGBA"),
    ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("WEBP", "RGB"), ("WEBP", "RGBA"),
    ("BMP", "RGB"), ("BMP", "L"), ("BMP", "P"), ("TIFF", "RGB"), ("TIFF", "RGBA"),
    ("TIFF", "L"), ("TIFF", "I;16"), ("TIFFLZW", "RGB"), ("AVIF", "RGB"),
)
SUFFIX = {"PNG": ".png", "PNG16": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp",
          "TIFF": ".tif", "TIFFLZW": ".tiff", "AVIF": ".avif"}
MUTATIONS = ("none", "truncate", "flip", "garbage", "huge_size", "zero_run")


def encode(kind: tuple[str, str], height: int, width: int, seed: int) -> bytes:
    """A valid file of ``kind`` with random pixels, height x width."""
    fmt, mode = kind
    rng = np.random.default_rng(seed)
    if fmt == "PNG16":
        import imagecodecs

        channels = {"LA": 2, "RGB": 3, "RGBA": 4}[mode]
        return imagecodecs.png_encode(rng.integers(0, 65536, (height, width, channels),
                                                   dtype=np.uint16))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode in ("P", "PT"):
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if mode == "PT":
            img.info["transparency"] = 0
    else:
        rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
        img = rgba.convert(mode) if mode in ("RGBA", "LA") else rgba.convert("RGB").convert(mode)
    buf = io.BytesIO()
    save = {"TIFFLZW": ("TIFF", {"compression": "tiff_lzw"}), "AVIF": ("AVIF", {"quality": 60})}
    name, kwargs = save.get(fmt, (fmt, {}))
    if mode == "PT":
        kwargs = {**kwargs, "transparency": 0}
    img.save(buf, format=name, **kwargs)
    return buf.getvalue()


def mutate(data: bytes, mutation: str, seed: int) -> bytes:
    """``data`` broken one way (``MUTATIONS``), reproducibly from ``seed``."""
    rng = random.Random(seed)
    if mutation == "none" or not data:
        return data
    if mutation == "truncate":
        return data[: rng.randrange(len(data))]
    if mutation == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if mutation == "garbage":
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
    if mutation == "zero_run":
        at = rng.randrange(len(data))
        return data[:at] + bytes(rng.randint(1, 32)) + data[at + 1:]
    return huge_size(data, rng)


def huge_size(data: bytes, rng: random.Random) -> bytes:
    """A PNG's IHDR rewritten to a huge width or height (CRC fixed, so only the size lies);
    other formats get a 4-byte field near the start set to a huge number."""
    out = bytearray(data)
    big = rng.choice([2**31 - 1, 134_228_553, 16_776_961, 100_000])
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 33:
        at = 16 + 4 * rng.randrange(2)  # IHDR's width or height
        out[at:at + 4] = struct.pack(">I", big)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif len(out) > 24:
        at = rng.randrange(4, min(len(out), 64) - 4)
        out[at:at + 4] = struct.pack("<I", big)
    return bytes(out)
