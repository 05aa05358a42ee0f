"""Single-process entry kept for the original README's ``from trainer_single_gpu import Trainer``.

There is one Trainer (``trainer.py``); it runs single-process whenever it is not launched
distributed, so this module only re-exports it.
"""

from trainer import Trainer  # noqa: F401

__all__ = ["Trainer"]
