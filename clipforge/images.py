"""Reading user images safely: any mode to RGB, EXIF orientation applied, bombs refused.

Init images and image prompts arrive from users and from the web UI, so every failure mode in
BAD_INPUTS.md row 9 ends here in one :class:`ImageReadError` that names the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

# Refuse images larger than this before decoding them (a decompression bomb is a tiny file that
# decodes to gigabytes). 8192 x 8192 is far above anything CLIP guidance can use.
MAX_IMAGE_PIXELS = 8192 * 8192


from clipforge.errors import ImageReadError


def load_image(path: str | os.PathLike, *, field: str = "image"):
    """Read an image file as an RGB float tensor.

    Transparent pixels are composited on white, palette/CMYK/greyscale/16-bit modes are
    converted, EXIF orientation is applied, and the first frame of an animation is used.

    Args:
        path: file to read; its format is detected from content, not from the name.
        field: the setting the path came from, named in errors.

    Shape:
        returns (1, 3, H, W), float32 in [0, 1].
    """
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    what = f"{field}: cannot read image {str(path)!r}"
    if not p.exists():
        raise ImageReadError(f"{what}: no such file", field)
    if p.is_dir():
        raise ImageReadError(f"{what}: it is a directory", field)
    if not p.is_file():  # /dev/zero, a FIFO (opening one would block), a socket
        raise ImageReadError(f"{what}: not a regular file", field)
    if p.stat().st_size == 0:
        raise ImageReadError(f"{what}: the file is empty", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageReadError(f"{what}: {w}x{h} is larger than the "
                                         f"{MAX_IMAGE_PIXELS:,}-pixel limit (decompression bomb?)", field)
                img.seek(0)  # first frame of an animation
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb_array(img)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{what}: {type(e).__name__}: {e}", field) from None
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_rgb_array(img) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) float32 in [0, 1]."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float32)
        scale = 65535.0 if (img.mode.startswith("I;16") or a.max(initial=0) > 255) else 255.0
        a = np.clip(a / scale, 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def fit_image(image, height: int, width: int, like):
    """Resize an image batch to (height, width) on ``like``'s device and dtype (antialiased).

    Shape:
        (3, H, W) or (B, 3, H, W) -> (B, 3, height, width).
    """
    import torch.nn.functional as F

    image = image.to(like.device, like.dtype)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.shape[-2:] != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False,
                              antialias=True)
    return image


def to_pil(image):
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> PIL RGB image."""
    from PIL import Image

    x = image.detach()
    if x.dim() == 4:
        x = x[0]
    arr = (x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(arr, "RGB")
