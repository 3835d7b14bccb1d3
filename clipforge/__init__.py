"""clipforge: CLIP-guided image generation.

Importing this package loads no model and no UI library; the names below resolve lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use, so `import clipforge` stays light)
_EXPORTS = {
    "RunConfig": "clipforge.config",
    "merge": "clipforge.config",
    "load_settings": "clipforge.config",
    "UsageError": "clipforge.errors",
    "ConfigError": "clipforge.errors",
    "ModelLoadError": "clipforge.errors",
    "RunError": "clipforge.errors",
    "NonFiniteLossError": "clipforge.errors",
    "RunOutOfMemoryError": "clipforge.errors",
    "Step": "clipforge.loop",
    "optimize": "clipforge.loop",
    "Run": "clipforge.runner",
    "Result": "clipforge.runner",
    "generate": "clipforge.runner",
    "run": "clipforge.runner",
    "step_end_adapter": "clipforge.runner",
    "FrameRecorder": "clipforge.frames",
    "ClipEmbedder": "clipforge.guidance.embedders",
    "Ensemble": "clipforge.guidance.embedders",
    "load_embedder": "clipforge.guidance.clip_models",
    "ModelCache": "clipforge.guidance.clip_models",
    "Prompt": "clipforge.guidance.prompts",
    "parse_prompt": "clipforge.guidance.prompts",
    "Cutouts": "clipforge.guidance.augment",
    "Guide": "clipforge.guidance.guide",
    "build_generator": "clipforge.registry",
    "save_png": "clipforge.outputs",
    "read_config": "clipforge.outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipforge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
