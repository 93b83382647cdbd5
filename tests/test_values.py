"""Tests of metric value conversion (roxxel.values).

JAX is only ever imported in a subprocess: other tests in this pytest
process need JAX's backend not to be initialised.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from roxxel.schema import BIG_INT, NON_SCALAR
from roxxel.values import describe_value as describe
from roxxel.values import to_wire

from .conftest import run_python


def _exact(actual, expected) -> None:
    """Equal and of the same type (1 == 1.0 == True would hide a wrong type)."""
    assert actual == expected
    assert type(actual) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(np.float32(0.5), 0.5, id="float32"),
        pytest.param(np.float16(-2.0), -2.0, id="float16"),
        pytest.param(np.float64(0.1), 0.1, id="float64"),
        pytest.param(np.longdouble(1.5), 1.5, id="longdouble"),
        pytest.param(np.int64(-7), -7, id="int64"),
        pytest.param(np.int8(5), 5, id="int8"),
        pytest.param(np.uint64(2**64 - 1), 2**64 - 1, id="uint64-max"),
        pytest.param(np.bool_(True), True, id="bool-true"),
        pytest.param(np.bool_(False), False, id="bool-false"),
    ],
)
def test_to_wire_turns_numpy_scalars_into_python_scalars(value, expected):
    _exact(to_wire(value), expected)


def test_to_wire_keeps_float32_value_exactly():
    # float32(0.1) is not 0.1: the wire carries the float32's own value.
    _exact(to_wire(np.float32(0.1)), float(np.float32(0.1)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(np.array(1.5), 1.5, id="float64"),
        pytest.param(np.array(3, dtype=np.int32), 3, id="int32"),
        pytest.param(np.array(True), True, id="bool"),
        pytest.param(np.array(2.5, dtype=np.float32), 2.5, id="float32"),
    ],
)
def test_to_wire_turns_a_zero_d_array_into_a_python_scalar(value, expected):
    _exact(to_wire(value), expected)


def test_a_masked_numpy_value_is_no_value_not_zero():
    assert to_wire(np.ma.masked) is None  # float() of it is 0.0, with a warning
    assert to_wire(np.ma.array([1.5, 2.5], mask=[True, False])[0]) is None
    assert to_wire(np.ma.array([1.5, 2.5], mask=[True, False])[1]) == 2.5


def test_to_wire_keeps_non_finite_floats():
    assert to_wire(np.float32("inf")) == math.inf
    assert math.isnan(to_wire(np.float64("nan")))
    assert math.isnan(to_wire(np.array(np.nan, dtype=np.float32)))


def test_to_wire_turns_a_vector_into_the_non_scalar_marker_naming_its_shape():
    result = to_wire(np.arange(3))
    assert set(result) == {NON_SCALAR}
    assert "(3,)" in result[NON_SCALAR]
    assert "numpy.ndarray" in result[NON_SCALAR]
    assert result[NON_SCALAR] == describe(np.arange(3))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.zeros((2, 3)), id="matrix"),
        pytest.param(np.zeros((0,)), id="empty-vector"),
        pytest.param(np.zeros((4, 0)), id="empty-matrix"),
    ],
)
def test_to_wire_marks_arrays_of_more_or_less_than_one_element(value):
    result = to_wire(value)
    assert result == {NON_SCALAR: describe(value)}
    assert str(value.shape) in result[NON_SCALAR]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(Decimal("1.25"), 1.25, id="decimal"),
        pytest.param(Decimal("-0.5"), -0.5, id="negative-decimal"),
        pytest.param(Fraction(1, 4), 0.25, id="fraction"),
    ],
)
def test_to_wire_turns_number_like_objects_into_floats(value, expected):
    _exact(to_wire(value), expected)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30, -(10**400), True + 2**70])
def test_to_wire_keeps_ints_past_64_bits_as_their_digits(value):
    assert to_wire(value) == {BIG_INT: str(value)}


def test_ints_of_any_size_and_booleans_are_written_exactly(tmp_path) -> None:
    result = run_python(
        textwrap.dedent(
            f"""
            import roxxel
            with roxxel.Logger({str(tmp_path)!r}, filename_prefix="v") as logger:
                logger.log_metrics_summary(step=1, metrics={{
                    "big": 10**30, "neg": -(10**25), "u64": 2**64 - 1, "flag": True,
                }})
                logger.log_metrics_summary(step=2, metrics={{
                    "big": 7, "neg": -(2**63), "u64": 0, "flag": False,
                }})
            """
        )
    )
    assert result.returncode == 0, result.stderr
    csv_text = (tmp_path / "v_metrics.csv").read_text()
    assert csv_text == (
        f"step,big,neg,u64,flag\n1,{10**30},{-(10**25)},{2**64 - 1},True\n2,7,{-(2**63)},0,False\n"
    )
    rows = [json.loads(line) for line in (tmp_path / "v_metrics.jsonl").open()]
    assert [{k: row[k] for k in list(row)[4:]} for row in rows] == [
        {"big": 10**30, "neg": -(10**25), "u64": 2**64 - 1, "flag": True},
        {"big": 7, "neg": -(2**63), "u64": 0, "flag": False},
    ]
    assert "not a scalar" not in (tmp_path / "v_system.log").read_text()


@pytest.mark.parametrize(
    ("value", "description"),
    [
        pytest.param(object(), "object", id="object"),
        pytest.param(1 + 2j, "complex", id="python-complex"),
        pytest.param(b"bytes", "bytes", id="bytes"),
        pytest.param(bytearray(b"x"), "bytearray", id="bytearray"),
        pytest.param({1, 2}, "set", id="set"),
        pytest.param([1.0], "list", id="list"),
        pytest.param(int, "type", id="a-class"),
    ],
)
def test_to_wire_turns_non_numbers_into_the_non_scalar_marker(value, description):
    assert to_wire(value) == {NON_SCALAR: description}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.complex64(1 + 2j), id="complex64"),
        pytest.param(np.complex128(0j), id="complex128-zero"),
        pytest.param(np.array(1 - 1j), id="zero-d-complex-array"),
    ],
)
def test_to_wire_marks_numpy_complex_numbers(value):
    result = to_wire(value)
    assert set(result) == {NON_SCALAR}
    assert "complex" in result[NON_SCALAR]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.datetime64("2020-01-01"), id="datetime64"),
        pytest.param(np.timedelta64(5, "s"), id="timedelta64"),
        pytest.param(np.array(object()), id="zero-d-object-array"),
        pytest.param(10**5000, id="int-past-pythons-digit-limit"),
    ],
)
def test_to_wire_never_raises_for_scalars_it_cannot_convert(value):
    result = to_wire(value)
    assert set(result) == {NON_SCALAR}


def test_describe_names_builtins_without_module():
    assert describe(object()) == "object"
    assert describe(1.5) == "float"
    assert describe(b"") == "bytes"


def test_describe_names_other_classes_with_module_and_qualname():
    assert describe(Decimal(1)) == "decimal.Decimal"

    class Local:
        pass

    assert describe(Local()) == (
        f"{__name__}.test_describe_names_other_classes_with_module_and_qualname.<locals>.Local"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.zeros((3,)), "numpy.ndarray of shape (3,) and dtype float64"),
        (np.zeros((2, 4), dtype=np.int8), "numpy.ndarray of shape (2, 4) and dtype int8"),
        (np.array(1.0), "numpy.ndarray of shape () and dtype float64"),
        (np.float32(1), "numpy.float32 of shape () and dtype float32"),
    ],
)
def test_describe_gives_shape_and_dtype_of_arrays(value, expected):
    assert describe(value) == expected


def test_describe_shows_shape_of_array_likes_without_dtype():
    class ShapeOnly:
        shape = [2, 2]

    assert describe(ShapeOnly()).endswith(" of shape (2, 2) and dtype None")


_JAX_SCRIPT = textwrap.dedent(
    """
    import json

    import jax.numpy as jnp

    from roxxel import codec
    from roxxel.schema import BIG_INT, NON_SCALAR
    from roxxel.values import to_wire

    results = {
        "float32": to_wire(jnp.float32(2.5)),
        "int32": to_wire(jnp.int32(-4)),
        "bool": to_wire(jnp.bool_(True)),
        "vector": to_wire(jnp.arange(3)),
    }
    sid = bytes(16)
    data = codec.encode_batch(sid, 1, [["m", 0.0, 1, {"loss": jnp.float32(0.25)}]], to_wire)
    results["decoded"] = codec.decode(data).records[0][3]
    print(json.dumps(results))
    """
)


def test_to_wire_converts_jax_scalars_in_a_subprocess():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["float32"] == 2.5
    assert out["int32"] == -4 and type(out["int32"]) is int
    assert out["bool"] is True
    assert list(out["vector"]) == [NON_SCALAR]
    assert "(3,)" in out["vector"][NON_SCALAR]
    assert out["decoded"] == {"loss": 0.25}


class _DeviceScalar:
    """Stands for a jax.Array (the module is what roxxel.values looks at):
    says whether it is ready, and counts the questions and the reads."""

    __module__ = "jax_stand_in"

    def __init__(self, value: float, ready: bool = True) -> None:
        self.value, self.ready = value, ready
        self.asked = self.read = 0

    def is_deleted(self) -> bool:
        return False

    def is_ready(self) -> bool:
        self.asked += 1
        return self.ready

    def __array__(self, dtype=None, copy=None):
        self.read += 1
        return np.asarray(self.value, dtype=dtype)


def test_a_cut_split_at_an_array_not_ready_reads_each_ready_array_once():
    from roxxel import codec, schema
    from roxxel.values import NotReady, ReadWhenReady, split_ready

    keys = ("loss", "lr")
    ready = [_DeviceScalar(float(i)) for i in range(3)]
    late = _DeviceScalar(9.0, ready=False)
    rows = [("m", keys, 1.0 + i, i, (array, 0.5)) for i, array in enumerate([*ready, late])]
    read = ReadWhenReady()
    with pytest.raises(NotReady):
        codec.encode_records(schema.metrics_records(rows), read)
    now, later = split_ready(rows, read.is_ready)
    assert now == rows[:3] and later == rows[3:]
    body = codec.encode_records(schema.metrics_records(now), read)
    assert [(a.asked, a.read) for a in ready] == [(1, 1)] * 3
    assert (late.asked, late.read) == (1, 0)
    [record] = codec.decode(codec.batch_frame(bytes(codec.SENDER_ID_LEN), 1, body)).records
    assert record[3:] == [[0, 1, 2], [[0.0, 0.5], [1.0, 0.5], [2.0, 0.5]]]
