"""Progress frames of a run, encoded once for every front end: a looping GIF and an H.264 MP4.

:class:`FrameRecorder` is a loop callback that keeps every K-th step's image as a small PIL
frame; :meth:`FrameRecorder.encoded` gives the files to write beside the PNG
(``{".gif": bytes, ".mp4": bytes}``), which ``clipforge generate``, the batch runner and the
studio write with :func:`clipforge.outputs.atomic_write_bytes`. The MP4 is encoded by the
ffmpeg binary that the imageio-ffmpeg package ships (``pip install 'clipforge[video]'``):
H.264 (libx264), yuv420p, so browsers and players show it.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from clipforge.errors import UsageError
from clipforge.outputs import atomic_write_bytes

MS_PER_FRAME = 80


def video_encoder():
    """The ``imageio_ffmpeg`` module, or a UsageError saying how to install it."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UsageError("an MP4 progress video needs imageio-ffmpeg; run: pip install "
                         "'clipforge[video]'", "save_video") from None
    return imageio_ffmpeg


class FrameRecorder:
    """Keeps every ``every``-th step's image (and the last) as small PIL frames.

    Use it as a loop callback: ``run(cfg, [recorder])``; then :meth:`save_gif`,
    :meth:`save_mp4` or :meth:`encoded`.

    Args:
        every: keep a frame every K steps (K >= 1).
        max_side: frames are shrunk to fit in ``max_side`` x ``max_side``.
        video: :meth:`encoded` includes an MP4 (the encoder is checked now, before the run).
    """

    def __init__(self, every: int, max_side: int = 256, video: bool = False):
        if every < 1:
            raise ValueError("FrameRecorder: every must be >= 1")
        if video:
            video_encoder()
        self.every, self.max_side, self.video, self.frames = every, max_side, video, []

    def __call__(self, step) -> None:
        if step.i % self.every == 0 or step.i == step.total:
            from clipforge.images import to_pil

            img = to_pil(step.image)
            img.thumbnail((self.max_side, self.max_side))
            self.frames.append(img)

    def _check(self) -> None:
        if not self.frames:
            raise ValueError("FrameRecorder: no frames recorded")

    def gif_bytes(self, ms_per_frame: int = MS_PER_FRAME) -> bytes:
        """The frames encoded as a looping GIF (``ms_per_frame`` each).

        Args:
            ms_per_frame: how long each frame shows.
        """
        self._check()
        buf = io.BytesIO()
        self.frames[0].save(buf, format="GIF", save_all=True, append_images=self.frames[1:],
                            duration=ms_per_frame, loop=0)
        return buf.getvalue()

    def mp4_bytes(self, ms_per_frame: int = MS_PER_FRAME) -> bytes:
        """The frames encoded as an H.264 MP4 (yuv420p; sides rounded up to even numbers).

        Args:
            ms_per_frame: how long each frame shows.
        """
        self._check()
        ffmpeg = video_encoder()
        w, h = self.frames[0].size
        size = (w + w % 2, h + h % 2)  # yuv420p needs even sides
        fd, tmp = tempfile.mkstemp(suffix=".mp4")
        os.close(fd)
        try:
            writer = ffmpeg.write_frames(tmp, size, fps=1000 / ms_per_frame, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1,
                                         output_params=["-movflags", "+faststart"])
            writer.send(None)  # start ffmpeg
            for frame in self.frames:
                writer.send(frame.convert("RGB").resize(size).tobytes())
            writer.close()
            return Path(tmp).read_bytes()
        finally:
            Path(tmp).unlink(missing_ok=True)

    def encoded(self) -> dict[str, bytes]:
        """The files to write beside the PNG, by suffix: ``.gif``, and ``.mp4`` with ``video``."""
        files = {".gif": self.gif_bytes()}
        if self.video:
            files[".mp4"] = self.mp4_bytes()
        return files

    def save_gif(self, path: str | os.PathLike, ms_per_frame: int = MS_PER_FRAME) -> Path:
        """Write the frames as a looping GIF, atomically.

        Args:
            path: the .gif file.
            ms_per_frame: how long each frame shows.
        """
        return atomic_write_bytes(path, self.gif_bytes(ms_per_frame))

    def save_mp4(self, path: str | os.PathLike, ms_per_frame: int = MS_PER_FRAME) -> Path:
        """Write the frames as an H.264 MP4, atomically.

        Args:
            path: the .mp4 file.
            ms_per_frame: how long each frame shows.
        """
        return atomic_write_bytes(path, self.mp4_bytes(ms_per_frame))


def recorder_for(cfg) -> FrameRecorder | None:
    """The recorder a run's settings ask for (``save_every``, ``save_video``), or None."""
    if not cfg.save_every:
        return None
    return FrameRecorder(cfg.save_every, video=cfg.save_video)


def write_beside(png: str | os.PathLike, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (suffix -> bytes) beside ``png`` atomically; returns their paths.

    Args:
        png: the image's path (``x.png`` -> ``x.gif``, ``x.mp4``).
        files: what :meth:`FrameRecorder.encoded` gave.
    """
    return [atomic_write_bytes(Path(png).with_suffix(suffix), data)
            for suffix, data in files.items()]


__all__ = ["FrameRecorder", "recorder_for", "write_beside", "video_encoder", "MS_PER_FRAME"]
