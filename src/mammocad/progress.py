"""The progress callbacks long-running functions accept (one definition for every stage).

Library functions take an optional callback instead of printing: the CLI turns it into a rich
status line, tests collect the messages, a script passes None.
"""

from __future__ import annotations

from collections.abc import Callable

#: Called with one human-readable line per step (``"fold 2 epoch 3: val_loss=0.61"``).
ProgressFn = Callable[[str], None]
#: Called with ``(done, total)`` items after each item of a batch job (import, preprocess). The
#: importers and the preprocessing driver still export it under their old name ``ProgressFn``.
CountProgressFn = Callable[[int, int], None]

__all__ = ["CountProgressFn", "ProgressFn"]
