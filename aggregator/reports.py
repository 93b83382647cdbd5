"""Problems reported once: the first time each is written, later ones only counted.

A report goes into the system log; a roll back rewinds that line, so a
report made since the last commit is forgotten with it and given again when
the problem comes back. Past ``limit`` distinct problems nothing new is
remembered (each costs memory): the caller counts them instead.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Reports", "MAX_REPORTED"]

MAX_REPORTED = 10_000


class Reports:
    """Which problems were reported, undoable back to the last commit."""

    def __init__(self, limit: int = MAX_REPORTED) -> None:
        self.limit = limit
        self._reported: set[Hashable] = set()
        self._since_commit: list[tuple[set, Hashable]] = []

    def first(self, who: bytes, what: str) -> bool | None:
        """``True``: report it now; ``False``: reported already; ``None``: past the limit."""
        key = (who, what)
        if key in self._reported:
            return False
        if len(self._reported) >= self.limit:
            return None
        self._remember(self._reported, key)
        return True

    def first_in(self, reported: set, key: Hashable) -> bool:
        """Like :meth:`first`, in a set of the caller's (a sender's warned keys);
        past the limit ``False``."""
        if key in reported or len(reported) >= self.limit:
            return False
        self._remember(reported, key)
        return True

    def _remember(self, reported: set, key: Hashable) -> None:
        reported.add(key)
        self._since_commit.append((reported, key))

    def commit(self) -> None:
        """The lines of the reports so far are on disk for good."""
        self._since_commit.clear()

    def roll_back(self) -> None:
        """The lines since the last commit were rewound: those reports are given again."""
        for reported, key in self._since_commit:
            reported.discard(key)
        self._since_commit.clear()
