"""Training data for CLIP: (image, caption) pairs read from disk, and the batch sources.

Data is ``"shapes"`` (the procedural set of :mod:`clipforge.training.shapes`, drawn afresh each
step), a folder of images with same-name ``.txt`` captions, or a ``.csv`` / ``.jsonl`` of
(path, caption). Files are listed and checked (caption text, image header) before training
starts and images are decoded lazily, batch by batch, so a data set larger than memory
trains; bad data raises :class:`~clipforge.errors.DataError` (a usage error) naming the file
and line. Every random choice takes the ``torch.Generator`` passed in, so a resumed run draws
the same batches.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from clipforge.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_IMG_COLS = ("path", "image", "file", "filepath", "filename")
_CAP_COLS = ("caption", "text", "title")


def read_pairs(data: str | os.PathLike) -> list[tuple[Path, str]]:
    """List (image path, caption) pairs from a folder, a ``.csv`` or a ``.jsonl`` file.

    A folder pairs every image with the same-name ``.txt`` file. A CSV needs a header with an
    image column (``path``, ``image``, ``file`` or ``filepath``) and a caption column
    (``caption``, ``text`` or ``title``); JSONL lines are objects with the same keys. Relative
    image paths are relative to the CSV/JSONL file's folder. Images are checked to exist here
    and decoded by :func:`load_image_fitted` when a batch draws them.

    Args:
        data: the folder or file.

    Raises:
        DataError: naming the file (and line) that cannot be used.
    """
    p = Path(data)
    if not p.exists():
        raise DataError("no such file or folder", p)
    if p.is_dir():
        return _folder_pairs(p)
    if p.suffix.lower() == ".csv":
        pairs = _csv_pairs(p)
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        pairs = [_pair(row, _columns(list(row), p, n), p, n) for n, row in _jsonl_rows(p)]
    else:
        raise DataError("expected `shapes`, a folder, or a .csv / .jsonl file", p)
    if not pairs:
        raise DataError("no (image, caption) rows", p)
    return pairs


def _folder_pairs(p: Path) -> list[tuple[Path, str]]:
    images = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", p)
    pairs = []
    for img in images:
        txt = img.with_suffix(".txt")
        if not txt.is_file():
            raise DataError(f"caption file {txt.name} is missing", img)
        try:
            cap = txt.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read caption: {e}", txt) from None
        if not cap:
            raise DataError("caption file is empty", txt)
        pairs.append((img, cap))
    return pairs


def _csv_pairs(p: Path) -> list[tuple[Path, str]]:
    try:
        fh = p.open(encoding="utf-8", newline="")
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read: {e}", p) from None
    with fh:
        cols = _columns(header, p)
        try:
            return [_pair(row, cols, p, reader.line_num) for row in reader]
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8: {e}", p, reader.line_num + 1) from None


def _jsonl_rows(p: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read: {e}", p) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"bad JSON: {e.msg}", p, n) from None
        if not isinstance(row, dict):
            raise DataError("each line must be a JSON object", p, n)
        yield n, row


def _columns(header: Sequence[str], p: Path, line: int | None = None) -> tuple[str, str]:
    if not header:
        raise DataError("empty file (no header)", p, line)
    img = next((c for c in _IMG_COLS if c in header), None)
    cap = next((c for c in _CAP_COLS if c in header), None)
    if img is None or cap is None:
        need = f"an image column ({', '.join(_IMG_COLS)})" if img is None else \
            f"a caption column ({', '.join(_CAP_COLS)})"
        raise DataError(f"missing column: need {need}; found {', '.join(header)}", p, line)
    return img, cap


def _pair(row: Mapping[str, Any], cols: tuple[str, str], p: Path, line: int) -> tuple[Path, str]:
    img, cap = row.get(cols[0]), row.get(cols[1])
    if not isinstance(img, str) or not img.strip():
        raise DataError("empty image path", p, line)
    if not isinstance(cap, str) or not cap.strip():
        raise DataError("empty caption", p, line)
    ip = Path(img.strip())
    ip = ip if ip.is_absolute() else p.parent / ip
    if not ip.is_file():
        raise DataError(f"image {str(ip)!r} not found", p, line)
    return ip, cap.strip()


def check_images(pairs: Sequence[tuple[Path, str]]) -> None:
    """Open every image's header (no decoding), so an unreadable file fails before training.

    Raises:
        DataError: naming the first file that is not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    for path, _ in pairs:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - the header is read by open
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"not a readable image: {e}", path) from None


def load_image_fitted(path: Path, image_size: int) -> torch.Tensor:
    """Decode one image, resize its short side to ``image_size`` and centre-crop.

    Shape:
        returns (3, image_size, image_size) uint8 in [0, 255].
    """
    from clipforge.images import fit_image, load_image

    try:
        x = load_image(path, field="data")
    except ValueError as e:
        raise DataError(str(e), path) from None
    h, w = x.shape[-2:]
    s = image_size / min(h, w)
    nh, nw = max(image_size, round(h * s)), max(image_size, round(w * s))
    x = fit_image(x, nh, nw, x)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    x = x[..., top:top + image_size, left:left + image_size]
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class Batch:
    """A training batch.

    Attributes:
        images: (N, 3, H, W) in [0, 1].
        captions: N captions; caption i was drawn for image i.
        match: optional (N, N) bool, ``match[i, j]`` when caption j is true of image i.
        keep: optional (N, 2) points (x, y) in [0, 1] that augmentation crops must contain.
    """

    images: torch.Tensor
    captions: list[str]
    match: torch.Tensor | None = None
    keep: torch.Tensor | None = None


class ShapesSource:
    """Fresh batches of the procedural shapes set (the shape's centre is kept in crops).

    Args:
        image_size: side of the images.
        batch_size: pairs per batch.
    """

    def __init__(self, image_size: int, batch_size: int):
        from clipforge.training.shapes import ShapesDataset

        self.ds = ShapesDataset(image_size=image_size)
        self.batch_size = batch_size

    def next(self, g: torch.Generator) -> Batch:
        """Draw the next batch with ``g``."""
        b = self.ds.sample(self.batch_size, g)
        return Batch(b.images, b.captions, b.match_matrix(), b.centre)


class PairsSource:
    """Random batches of (image, caption) pairs, each batch's images decoded when drawn.

    Only the paths and captions stay in memory (a data set may be larger than RAM); the
    headers are checked here, before training.

    Args:
        pairs: from :func:`read_pairs`.
        image_size: side the images are fitted to.
        batch_size: pairs per batch (at most the number of pairs).
    """

    def __init__(self, pairs: Sequence[tuple[Path, str]], image_size: int, batch_size: int):
        check_images(pairs)
        self.paths, self.image_size = [p for p, _ in pairs], image_size
        self.captions = [c for _, c in pairs]
        self.batch_size = min(batch_size, len(pairs))
        ids = {c: i for i, c in enumerate(dict.fromkeys(self.captions))}
        self.caption_id = torch.tensor([ids[c] for c in self.captions])

    def next(self, g: torch.Generator) -> Batch:
        """Draw the next batch with ``g`` (pairs sharing a caption match each other)."""
        idx = torch.randperm(len(self.captions), generator=g)[: self.batch_size]
        cid = self.caption_id[idx]
        images = torch.stack([load_image_fitted(self.paths[i], self.image_size)
                              for i in idx.tolist()])
        return Batch(images.float() / 255, [self.captions[i] for i in idx.tolist()],
                     cid[:, None] == cid[None, :])


def make_source(data: str | os.PathLike, image_size: int, batch_size: int
                ) -> ShapesSource | PairsSource:
    """The batch source for ``data``: ``"shapes"``, or pairs read (and decoded) from disk.

    Args:
        data: ``"shapes"``, a folder, or a .csv / .jsonl file (see :func:`read_pairs`).
        image_size: side of the batches' images.
        batch_size: pairs per batch.
    """
    if str(data) == "shapes":
        return ShapesSource(image_size, batch_size)
    return PairsSource(read_pairs(data), image_size, batch_size)


__all__ = ["IMAGE_EXTENSIONS", "read_pairs", "check_images", "load_image_fitted", "Batch",
           "ShapesSource", "PairsSource", "make_source"]
