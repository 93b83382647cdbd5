"""A roxxel Logger behind the shape of CLU's ``metric_writers.MetricWriter``.

Code written for ``clu.metric_writers`` (``write_scalars(step, {...})``,
``write_hparams``, ``flush``) can be handed a :class:`MetricWriter` and its
scalars land in the run's metrics CSV/JSONL. CLU is not a dependency: this
only has the same methods. What a text log cannot hold (images, videos,
audio, histograms, tensor summaries) is skipped with one warning per kind
in the run's log, never an exception in the training loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .logger import Logger

__all__ = ["MetricWriter"]


class MetricWriter:
    """``write_scalars(step, {name: value})`` as ``logger.log_metrics_summary``.

    ``all_ranks=True`` writes every rank's scalars (with a ``rank`` column);
    by default only rank 0's, as ``log_metrics_summary``. :meth:`close`
    flushes; the Logger is closed by whoever opened it.
    """

    def __init__(self, logger: Logger, *, all_ranks: bool = False) -> None:
        self.logger = logger
        self.all_ranks = all_ranks
        self._skipped: set[str] = set()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self.logger.log_metrics_summary(step, scalars, all_ranks=self.all_ranks)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        for name, text in texts.items():
            self.logger.log_message(f"step {step} {name}: {text}")

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.logger.log_message(f"hparams: {json.dumps(dict(hparams), default=str)}")

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._skip("write_summaries", values)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        self._skip("write_images", images)

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        self._skip("write_videos", videos)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        self._skip("write_audios", audios)

    def write_histograms(
        self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
    ) -> None:
        self._skip("write_histograms", arrays)

    def flush(self) -> None:
        self.logger.flush()

    def close(self) -> None:
        self.flush()

    def _skip(self, method: str, values: Mapping[str, Any]) -> None:
        if method in self._skipped:
            return
        self._skipped.add(method)
        self.logger.log_message(
            f"roxxel MetricWriter: {method} is not stored in a text log; skipped "
            f"({', '.join(map(str, values)) or 'nothing'}; said once)",
            level=logging.WARNING,
        )
