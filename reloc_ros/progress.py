"""Progress bars on stderr for long CLI runs (quiet when disabled or not a terminal-friendly run)."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


class _Bar(tqdm):
    def update_to(self, n: int, total: int | None = None) -> None:
        """Callback form: set the position to ``n`` of ``total``."""
        if total is not None:
            self.total = total
        self.update(n - self.n)


def progress_bar(iterable, desc: str, enabled: bool = True) -> _Bar:
    """A tqdm bar on stderr; ``iterable`` may be None for callback use (``bar.update_to(n, total)``)."""
    return _Bar(iterable, desc=desc, disable=not enabled, file=sys.stderr, leave=False, dynamic_ncols=True,
                mininterval=0.5)
