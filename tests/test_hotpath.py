"""roxxel.hotpath: the swaps of what a Logger's log_* calls append through."""

from __future__ import annotations

import logging
import threading
from collections import deque
from types import SimpleNamespace

import pytest

from roxxel.hotpath import HotPath


class Owner:
    """What a Logger gives its hot path: the two attributes its calls call."""

    def log(self, record: tuple) -> None:
        self._append_line(record)


def sender() -> SimpleNamespace:
    # The two deques and the doorbell are all of a Sender the hot path touches.
    rings: list[int] = []
    ring = lambda: rings.append(1)  # noqa: E731
    return SimpleNamespace(lines=deque(), metrics=deque(), ring=ring, rings=rings)


def test_a_closed_hot_path_is_never_pointed_at_a_sender_again() -> None:
    owner = Owner()
    hot = HotPath(owner, 0, logging.getLogger("test"))
    first = sender()
    assert hot.point_at(first)
    owner.log(("l", 1.0, 20, "sent"))
    hot.close()
    late = sender()  # a forked child's first record starting one as close() runs
    assert not hot.point_at(late)
    assert hot.sender is first
    with pytest.raises(RuntimeError, match="closed"):
        owner.log(("l", 1.0, 20, "after close"))
    assert list(first.lines) == [("l", 1.0, 20, "sent")] and not late.lines


def test_a_sleeping_sender_is_rung_once_and_the_plain_append_comes_back() -> None:
    owner = Owner()
    hot = HotPath(owner, 0, logging.getLogger("test"))
    s = sender()
    assert not hot.sender_sleeps(s)  # not pointed at it yet: no sleep
    hot.point_at(s)
    assert hot.sender_sleeps(s)
    owner.log(("l", 1.0, 20, "wakes"))
    owner.log(("l", 1.0, 20, "plain"))
    assert s.rings == [1]
    assert owner._append_line == s.lines.append
    assert len(s.lines) == 2


def test_forked_gives_new_locks_even_if_the_parent_held_them() -> None:
    owner = Owner()
    hot = HotPath(owner, 0, logging.getLogger("test"))
    hot.point_at(sender())
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with hot._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        hot.forked()  # what the child sees: a lock no thread of its own will let go
        assert hot.sender is None
        hot.close()  # would wait for the holder without a new lock
    finally:
        release.set()
        thread.join()
    with pytest.raises(RuntimeError):
        owner.log(("l", 1.0, 20, "x"))
