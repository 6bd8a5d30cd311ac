"""Property-based fuzzing of the image path (read -> upscale with bicubic -> write) over every
format, depth and mode, valid and broken (``tests/imagegen.py``): the only failure allowed is
the clean ``ImageReadError``. Hypothesis runs derandomized (a fixed seed) so CI sees the same
files each time; ``tests/corpus/`` holds hostile files found before, replayed every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (the dev extra) is missing")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastdiffsr.api import upscale  # noqa: E402
from fastdiffsr.imageio import ImageReadError, Picture, read_image, write_image  # noqa: E402
from fastdiffsr.zoo import load_model  # noqa: E402

from .imagegen import KINDS, MUTATIONS, SUFFIX, encode, mutate  # noqa: E402

CORPUS = Path(__file__).parent / "corpus"
BICUBIC = load_model("bicubic-x2")


def _round_trip(path: Path, tmp_path: Path) -> Picture | None:
    """Read, upscale x2 with bicubic, write PNG, read back: the picture, or None for a clean
    ImageReadError; anything else fails the test."""
    pic = _check_read(path)
    if pic is not None:
        out = write_image(tmp_path / "out.png", upscale(pic, BICUBIC))
        back = read_image(out)
        assert (back.height, back.width) == (2 * pic.height, 2 * pic.width)
        assert back.bit_depth == pic.bit_depth and back.is_gray == pic.is_gray
    return pic


def _check_read(path: Path) -> Picture | None:
    """The picture, or None for a clean ImageReadError; anything else fails the test."""
    try:
        pic = read_image(path, max_pixels=4_000_000)
    except ImageReadError as e:
        assert str(path) in str(e)
        return None
    assert pic.height >= 1 and pic.width >= 1
    assert np.isfinite(pic.pixels).all() and 0 <= pic.pixels.min() <= pic.pixels.max() <= 1
    return pic


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), height=st.integers(1, 20), width=st.integers(1, 20),
       mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**16))
def test_read_upscale_write_never_fails_but_cleanly(tmp_path, kind, height, width, mutation,
                                                     seed) -> None:
    valid = encode(kind, height, width, seed)
    path = tmp_path / f"x{SUFFIX[kind[0]]}"
    path.write_bytes(mutate(valid, mutation, seed))
    pic = _round_trip(path, tmp_path)
    if mutation == "none":
        assert pic is not None and (pic.height, pic.width) == (height, width)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.*")), ids=lambda p: p.name)
def test_corpus_of_hostile_files(path: Path, tmp_path: Path) -> None:
    """Each committed file round-trips or fails with the clean error. The corpus: a 68-byte LA
    PNG and a 123-byte TIFF declaring 16.8 and 134 M pixels, a 16-bit PNG declaring 1 x 1 over
    64 MB of zeros, a BMP whose DPI broke PNG writing (found by the test above), a truncated
    JPEG, a 16-bit PNG with a bad CRC, random bytes named .webp."""
    _round_trip(path, tmp_path)
