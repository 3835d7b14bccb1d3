"""The training API under its old import path: re-exports of the split training modules.

The trainer used to live here in one file. It is now :mod:`~clipforge.training.model_io`
(configs, build, save, load), :mod:`~clipforge.training.data`,
:mod:`~clipforge.training.augment`, :mod:`~clipforge.training.trainer` and
:mod:`~clipforge.training.zeroshot`; this module keeps ``from clipforge.training.contrastive
import train, save_model, ...`` working for the CLI and scripts.

One shim is left: :func:`train` still accepts the removed ``progress=`` keyword so that a CLI
not yet drawing progress from ``callback`` keeps running; it draws nothing (a library never
prints) and warns when asked for a bar. Delete it once no caller passes ``progress``.
"""

from __future__ import annotations

import warnings
from typing import Any

from clipforge.errors import DataError
from clipforge.guidance.embedders import OPENAI_MEAN, OPENAI_STD
from clipforge.training import trainer as _trainer
from clipforge.training.augment import Augment
from clipforge.training.data import IMAGE_EXTENSIONS, Batch, load_pairs, read_pairs
from clipforge.training.model_io import (CONFIGS, build_model, build_tokenizer, image_size_of,
                                         load_model_dir, resolve_config, save_model)
from clipforge.training.trainer import (MAX_LOGIT_SCALE, TrainResult, contrastive_loss,
                                        load_checkpoint, save_checkpoint)
from clipforge.training.zeroshot import (LinearProbe, linear_probe, shapes_zero_shot,
                                         text_classifier, zero_shot)


def train(*args: Any, progress: bool = False, **kwargs: Any) -> TrainResult:
    """:func:`clipforge.training.trainer.train`, also accepting the removed ``progress`` flag.

    Args:
        *args, **kwargs: as :func:`clipforge.training.trainer.train`.
        progress: ignored; True warns (draw progress from ``callback(step, loss)`` instead).
    """
    if progress:
        warnings.warn("train(progress=True) draws nothing any more; pass callback=(step, loss) "
                      "and draw progress in the front end", DeprecationWarning, stacklevel=2)
    return _trainer.train(*args, **kwargs)


__all__ = ["CONFIGS", "DataError", "IMAGE_EXTENSIONS", "MAX_LOGIT_SCALE", "OPENAI_MEAN",
           "OPENAI_STD", "Augment", "Batch", "LinearProbe", "TrainResult", "build_model",
           "build_tokenizer", "contrastive_loss", "image_size_of", "linear_probe",
           "load_checkpoint", "load_model_dir", "load_pairs", "read_pairs", "resolve_config",
           "save_checkpoint", "save_model", "shapes_zero_shot", "text_classifier", "train",
           "zero_shot"]
