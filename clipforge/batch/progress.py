"""What a batch reports while it runs: the :class:`Progress` observer, and :class:`Silent`.

The batch library never prints (DESIGN rule 1); :func:`~clipforge.batch.runner.run_sequential`
and :func:`~clipforge.batch.ray_backend.run_ray` tell an observer instead, and each front end
draws it its own way (``clipforge batch`` as rich bars). Every method may be a no-op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from clipforge.batch.items import Item
    from clipforge.loop import Step


class Progress(Protocol):
    """What a batch reports while it runs (every method may be a no-op)."""

    def note(self, text: str) -> None:
        """A line for the person watching.

        Args:
            text: e.g. how many temp files were swept, how many Ray actors started.
        """

    def start_item(self, item: "Item") -> None:
        """An item starts rendering.

        Args:
            item: the item (its ``config.steps`` is the length of its run).
        """

    def step(self, step: "Step") -> None:
        """The running item made one step.

        Args:
            step: the loop's Step (``step.loss`` on the device: reading it syncs).
        """

    def end_item(self, item: "Item", result) -> None:
        """An item ended (its files and manifest line are written).

        Args:
            item: the item.
            result: a :class:`~clipforge.batch.runner.Rendered`: ``status`` (``ok``, ``failed``,
                ``nonfinite`` or ``error``), ``seconds``, ``loss``, ``error``.
        """


class Silent(Progress):
    """A :class:`Progress` that reports nothing (the protocol's methods do nothing)."""


__all__ = ["Progress", "Silent"]
