"""Where each thread was found: a summary of ``py-spy record --format raw``.

``python -m benchmarks.stack_summary FILE [--top N]``

py-spy's raw format is one line per distinct stack, ``frame;frame;... COUNT``,
the outermost frame first; with ``--subprocesses`` and ``--threads`` the
first frames name the process and the thread. Recorded without ``--idle``,
a thread's samples are the time it was on a CPU (or waiting for the GIL).
Per process and thread this prints its samples, the functions it was found
in last (self) and the roxxel and aggregator functions it was found under
(inclusive), each as a share of that thread's samples.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["summarise"]

_LINE_NUMBER = re.compile(r":\d+\)$")
_OURS = ("roxxel/", "aggregator/")


def _who(frames: list[str]) -> tuple[str, list[str]]:
    """The process and thread a stack belongs to, and its code frames."""
    labels = []
    while frames and (frames[0].startswith("process ") or frames[0].startswith("thread ")):
        label = frames.pop(0)
        if label.startswith("process "):
            # 'process 123:"python -m aggregator --bind=... "': the pid and the program.
            pid, _, command = label[len("process ") :].partition(":")
            words = command.strip('"').split()
            program = " ".join(w for w in words[:4] if not w.startswith("--")) or "?"
            label = f"process {pid} ({program})"
        labels.append(label)
    return " / ".join(labels) or "?", frames


def summarise(lines: Iterable[str], top: int = 10) -> str:
    totals: Counter[str] = Counter()
    selves: dict[str, Counter[str]] = {}
    ours: dict[str, Counter[str]] = {}
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        who, frames = _who(stack.split(";"))
        frames = [_LINE_NUMBER.sub(")", f) for f in frames]
        n = int(count)
        totals[who] += n
        if frames:
            selves.setdefault(who, Counter())[frames[-1]] += n
        inside = ours.setdefault(who, Counter())
        for frame in set(frames):
            if any(part in frame for part in _OURS):
                inside[frame] += n
    out = []
    for who, n in totals.most_common():
        out.append(f"{who}: {n:,} samples")
        for title, counts in (("self", selves.get(who)), ("under", ours.get(who))):
            for frame, k in (counts or Counter()).most_common(top):
                out.append(f"  {title:5} {100 * k / n:5.1f} %  {frame}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stack_summary")
    parser.add_argument("file", help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=10, help="functions per list (default 10)")
    args = parser.parse_args(argv)
    with open(args.file, encoding="utf-8", errors="replace") as f:
        print(summarise(f, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
