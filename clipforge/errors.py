"""Every error clipforge raises on purpose, in two families, so "exit 2 or exit 1" is decided once.

- :class:`UsageError` (a ``ValueError``): the input is wrong (a setting out of range, a file
  that cannot be read, a model that does not exist). Reported before any work starts; the CLI
  exits 2, the studio shows it next to the controls, a batch marks only that item failed.
- :class:`RunError` (a ``RuntimeError``): the input was fine but the run failed (divergence,
  out of memory, a full disk). The CLI exits 1.

Front ends map exceptions to exit codes with :func:`exit_code` and nothing else.
"""

from __future__ import annotations

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValueError):
    """Bad input; ``field`` names the setting, control or option when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ConfigError(UsageError):
    """A setting is out of range; the message starts with the field's name."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}", field_name)


class ModelLoadError(UsageError):
    """A CLIP model cannot be loaded; the message lists what is available."""


class ImageReadError(UsageError):
    """An image file cannot be used; the message says which file and why."""


class WeightsError(UsageError):
    """A weights file is missing, corrupt, unsafe or in an unknown format."""


class DataError(UsageError):
    """Training data cannot be used; ``path`` (and ``line`` when known) say where."""

    def __init__(self, message: str, path=None, line: int | None = None):
        where = "" if path is None else f"{path}" + ("" if line is None else f", line {line}")
        super().__init__(f"{where}: {message}" if where else message)
        self.path = None if path is None else str(path)
        self.line = line


class RunError(RuntimeError):
    """A run failed for a reason that is not the input's fault (exit 1)."""


class NonFiniteLossError(RunError):
    """The optimization diverged; ``step`` is the first step where it was seen."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.step = step


class RunOutOfMemoryError(RunError):
    """The device (or the host) ran out of memory; the message says what to reduce."""


class DiskError(RunError):
    """Writing an output failed (full disk, read-only or vanished folder)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """``TypeName: first line of the message`` (cut at ``limit`` characters), to quote a
    library's exception inside one of ours without its traceback.

    Args:
        err: the exception to quote.
        limit: the most characters of its message kept.
    """
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:limit]}" if text else type(err).__name__


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for an exception: 2 bad input, 130 interrupted, 1 anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    return EXIT_RUNTIME


__all__ = ["UsageError", "ConfigError", "ModelLoadError", "ImageReadError", "WeightsError",
           "DataError", "RunError", "NonFiniteLossError", "RunOutOfMemoryError", "DiskError",
           "exit_code", "first_line", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_INTERRUPTED"]
