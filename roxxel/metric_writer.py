"""A roxxel Logger behind the shape of CLU's ``metric_writers.MetricWriter``.

Code written for ``clu.metric_writers`` (``write_scalars(step, {...})``,
``write_hparams``, ``flush``) can be handed a :class:`MetricWriter`, alone or
inside CLU's ``AsyncWriter``/``MultiWriter``, and its scalars land in the
run's metrics CSV/JSONL. CLU is not a dependency: this only has the same
methods, with CLU's parameter names (its ``AsyncWriter`` passes them by
keyword). What a text log cannot hold (images, videos, audio, histograms,
point clouds, tensor summaries) is skipped with one warning per kind in the
run's log, never an exception in the training loop.

Threading and order are the Logger's: calls from one thread keep their order;
:meth:`MetricWriter.flush` returns once the collector has written them.
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
        """One INFO line ``hparams: {JSON}``, nested configs as dotted keys.

        A nested mapping or ``ConfigDict`` (``{"model": {"depth": 4}}``) gives
        ``model.depth``, a list ``schedule.0``...; NumPy/JAX scalars stay
        numbers (see :func:`_flat_hparams`).
        """
        # default=str: a value JSON has no form for (a dtype, a Path, an enum)
        # is still shown, rather than the whole line lost to a TypeError.
        self.logger.log_message(f"hparams: {json.dumps(_flat_hparams(hparams), default=str)}")

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

    def write_pointcloud(
        self,
        step: int,
        point_clouds: Mapping[str, Any],
        *,
        point_colors: Mapping[str, Any] | None = None,
        configs: Mapping[str, str | float | bool | None] | None = None,
    ) -> None:
        self._skip("write_pointcloud", point_clouds)

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


def _flat_hparams(hparams: Any) -> dict[str, Any]:
    """``hparams`` as one level of dotted keys, the way CLU's SummaryWriter stores them.

    A nested mapping, or anything with ``items()`` (an ``ml_collections``
    ``ConfigDict`` is not a ``Mapping``), adds its keys after a dot
    (``model.depth``); a list or tuple adds its indices (``schedule.0``); an
    empty one adds nothing. A NumPy/JAX scalar (shape ``()``) becomes the
    Python number it holds, a larger array a (nested) list. ``None`` stays
    ``None`` (CLU writes ``""``, because TensorBoard's hparams cannot hold it).
    """
    flat: dict[str, Any] = {}
    _flatten(hparams, "", flat)
    return flat


def _flatten(node: Any, prefix: str, into: dict[str, Any]) -> None:
    if isinstance(node, (list, tuple)):
        pairs: Any = enumerate(node)
    else:
        pairs = node.items()
    for key, value in pairs:
        name = f"{prefix}{key}"
        if _is_branch(value):
            _flatten(value, name + ".", into)
        else:
            into[name] = _leaf(value)


def _is_branch(value: Any) -> bool:
    if isinstance(value, (list, tuple, Mapping)):
        return True
    # Duck-typed as CLU does, for ConfigDict; a class (which may define an
    # ``items`` method) and strings/arrays are leaves.
    return (
        not isinstance(value, (type, str, bytes))
        and getattr(value, "shape", None) is None
        and callable(getattr(value, "items", None))
    )


def _leaf(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    shape = getattr(value, "shape", None)
    if shape is None:
        return value
    try:
        # item() gives the value of a NumPy or JAX scalar as a Python number
        # (a float32 0.1 as the double 0.10000000149011612, as TensorBoard
        # stores it); tolist() does the same for each element of an array.
        return value.item() if tuple(shape) == () else value.tolist()
    except Exception:
        return value  # shown through json's default=str
