"""Turning the caller's metric values into what travels on the wire.

:func:`to_wire` is the msgpack ``default`` hook of the client's sender
thread, so a ``jax.Array`` is read there, never on the training loop's
thread; :class:`ReadWhenReady`, the hook while the sender runs, does
not wait for one the device is still computing either: it raises
:class:`NotReady`, and the sender keeps that row, and the rows after it,
for a later cycle. Python ``int``/``float``/``bool``/
``str``/``None`` (and ``float`` subclasses such as ``numpy.float64``) never
reach it: msgpack packs them itself.

An array with exactly one element (shape ``()``, ``(1,)``, ``(1, 1)``...) is
logged as that element. An int too large for msgpack (beyond 64 bits)
becomes ``{BIG_INT: its digits}``, which the collector writes exactly. Any
other value that is not a scalar becomes a small ``{NON_SCALAR:
description}`` map; the collector reports it once per key and writes
nothing for it. :func:`to_wire` never raises.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .schema import BIG_INT, NON_SCALAR

__all__ = [
    "to_wire",
    "ReadWhenReady",
    "NotReady",
    "split_ready",
    "describe_value",
]


class NotReady(Exception):
    """A ``jax.Array`` the device is still computing (from :class:`ReadWhenReady`)."""


class ReadWhenReady:
    """:func:`to_wire` for one cut of rows, but a ``jax.Array`` not yet
    computed raises :class:`NotReady` instead of waiting for the device; it
    remembers what it read.

    A cut is encoded once; when an array is not ready, it is split
    (:func:`split_ready`) and its ready part encoded again: the values read
    the first time are not asked or read again. The cut's rows keep them
    alive meanwhile, so their ids are theirs.
    """

    def __init__(self) -> None:
        self._read: dict[int, Any] = {}
        self._late = 0  # the id of the array found not ready, if one was

    def __call__(self, value: Any) -> Any:
        key = id(value)
        if key in self._read:
            return self._read[key]
        if not _is_ready(value):
            self._late = key
            raise NotReady
        wire = self._read[key] = to_wire(value)
        return wire

    def is_ready(self, value: Any) -> bool:
        key = id(value)
        return key in self._read or (key != self._late and _is_ready(value))


def split_ready(
    rows: list[tuple], is_ready: Callable[[Any], bool]
) -> tuple[list[tuple], list[tuple]]:
    """Metrics entries ``(kind, keys, ts, step, values)`` split before the first
    one holding an array the device is still computing (``is_ready``: e.g.
    :meth:`ReadWhenReady.is_ready`): those that can be read now, and that one
    with the rest (in order, for later)."""
    for i, row in enumerate(rows):
        if not all(map(is_ready, row[4])):
            return rows[:i], rows[i:]
    return rows, []


def _is_ready(value: Any) -> bool:
    if not type(value).__module__.startswith("jax"):
        return True
    try:
        # is_ready() of a deleted (donated) array crashes jaxlib 0.10: asked first.
        if value.is_deleted():
            return True  # to_wire says it could not be read, at once
        return bool(value.is_ready())
    except Exception:
        return True  # not an array that says: to_wire reads it as it can


def to_wire(value: Any) -> Any:
    """Convert a NumPy/JAX (or any array-like) scalar to a Python scalar; never raises.

    A value that cannot be read (a deleted or donated ``jax.Array``, an
    ``item()`` that fails) becomes the non-scalar marker, with the error.
    """
    try:
        return _to_wire(value)
    except Exception as exc:
        try:
            what = describe_value(value)
        except Exception:
            what = "a value"
        return {NON_SCALAR: f"{what} that could not be read ({type(exc).__name__}: {exc})"}


def _to_wire(value: Any) -> Any:
    array = value
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value).__module__.startswith("jax"):
        # A jax.Array: read once, through numpy.asarray (about 0.8 of JAX's
        # own item()); one number, the common case, in a few C-level calls.
        array = numpy.asarray(value)
        if array.size == 1:
            return _python_scalar(array.item())
    elif isinstance(value, int) and not isinstance(value, bool):
        # msgpack packs every other int itself. Python refuses the digits of
        # an int past sys.get_int_max_str_digits(): that one is not a scalar.
        return {BIG_INT: str(int(value))}
    if type(value).__name__ == "MaskedConstant":  # numpy.ma.masked: no value, not 0.0
        return None
    shape = getattr(array, "shape", None)
    item = getattr(array, "item", None)
    if shape is not None and item is not None:
        size = 1
        for dim in shape:
            size *= dim
        if size == 1:
            return _python_scalar(item())
        return {NON_SCALAR: describe_value(value)}
    return _as_float(value)


def describe_value(value: Any) -> str:
    """A short human description of a value's type (and shape, for arrays)."""
    cls = type(value)
    name = f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__name__
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{name} of shape {tuple(shape)} and dtype {dtype}"
    return name


def _python_scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, complex):
        return {NON_SCALAR: "complex number"}
    return _as_float(value)


def _as_float(value: Any) -> Any:
    # Anything may arrive here (dates, objects, ints past 2**64): never raise,
    # or the whole batch would be lost for one value.
    try:
        return float(value)
    except Exception:
        return {NON_SCALAR: describe_value(value)}
