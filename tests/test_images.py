"""Reading user images: BAD_INPUTS row 9."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.images import MAX_IMAGE_PIXELS, ImageReadError, load_image


def save(img, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("make, why", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "directory"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    (lambda p: (p.write_text("hello, I am text"), p)[1], "cannot read image"),
    (lambda p: (p.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>'), p)[1], "cannot read image"),
])
def test_unreadable(tmp_path, make, why):
    p = make(tmp_path / "x.png")
    with pytest.raises(ImageReadError, match=why) as e:
        load_image(p, field="init_image")
    assert "init_image" in str(e.value)


def test_truncated_png(tmp_path):
    p = save(Image.new("RGB", (64, 64), "red"), tmp_path / "a.png")
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(ImageReadError, match="cannot read image"):
        load_image(p)


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "P", "RGBA", "1", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (8, 6), (200, 30, 30)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16))
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    p = save(img, tmp_path / f"a.{fmt.lower()}", format=fmt)
    x = load_image(p)
    assert x.shape == (1, 3, 6, 8) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    if mode == "I;16":
        assert abs(x.mean().item() - 40000 / 65535) < 1e-3


def test_alpha_composited_on_white(tmp_path):
    p = save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "t.png")
    assert torch.allclose(load_image(p), torch.ones(1, 3, 4, 4))


def test_one_pixel_and_animated_gif(tmp_path):
    assert load_image(save(Image.new("RGB", (1, 1), "blue"), tmp_path / "1.png")).shape == (1, 3, 1, 1)
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green")]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    x = load_image(p)
    assert x[0, 0].mean() > 0.9 and x[0, 1].mean() < 0.1  # first frame, red


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (20, 10), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    p = save(img, tmp_path / "r.jpg", exif=exif)
    assert load_image(p).shape == (1, 3, 20, 10)


def test_decompression_bomb_refused(tmp_path):
    # a valid PNG header claiming a huge size: refused before any pixel is decoded
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    with pytest.raises(ImageReadError, match="bomb|larger"):
        load_image(p)
