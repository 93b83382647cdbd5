"""Tests of rank detection (roxxel.ranks).

Launcher variables are tested with a dict ``environ``. JAX's own state is
looked up in ``sys.modules``; an autouse fixture hides any real JAX modules
so these tests do not depend on what else the pytest process imported, and
fakes stand in for JAX where the order of sources is tested. One test runs
real JAX (CPU) in a subprocess, so this process never starts JAX's backend.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roxxel.ranks import RankInfo, detect_rank

JAX_MODULES = ("jax", "jax._src.distributed", "jax._src.xla_bridge")

LAUNCHER_VARS = (
    "TPU_WORKER_ID",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_SLICE_ID",
    "MEGASCALE_NUM_SLICES",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMIX_SIZE",
    "PMI_RANK",
    "PMI_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "JOB_COMPLETION_INDEX",
)


@pytest.fixture(autouse=True)
def _no_jax_in_sys_modules(monkeypatch):
    for name in JAX_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)


# --------------------------------------------------------------------------
# Launchers, one dict environ each
# --------------------------------------------------------------------------

LAUNCHER_CASES = [
    # TPU
    pytest.param({"TPU_WORKER_ID": "0"}, RankInfo(0, 1, "TPU"), id="tpu-worker-0-alone"),
    pytest.param({"TPU_WORKER_ID": "2"}, RankInfo(2, 3, "TPU"), id="tpu-no-hostnames"),
    pytest.param(
        {"TPU_WORKER_ID": "1", "TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3"},
        RankInfo(1, 4, "TPU"),
        id="tpu-with-hostnames",
    ),
    pytest.param(
        {"TPU_WORKER_ID": "0", "TPU_WORKER_HOSTNAMES": "t-0,,t-1,"},
        RankInfo(0, 2, "TPU"),
        id="tpu-hostnames-empty-entries-skipped",
    ),
    pytest.param(
        {"TPU_WORKER_ID": "5", "TPU_WORKER_HOSTNAMES": "t-0,t-1"},
        RankInfo(5, 6, "TPU"),
        id="tpu-worker-beyond-hostnames",
    ),
    pytest.param(
        {
            "TPU_WORKER_ID": "3",
            "TPU_WORKER_HOSTNAMES": "a,b,c,d",
            "MEGASCALE_SLICE_ID": "2",
            "MEGASCALE_NUM_SLICES": "3",
        },
        RankInfo(2 * 4 + 3, 3 * 4, "TPU"),
        id="tpu-multislice",
    ),
    pytest.param(
        {
            "TPU_WORKER_ID": "1",
            "TPU_WORKER_HOSTNAMES": "a,b",
            "MEGASCALE_SLICE_ID": "0",
            "MEGASCALE_NUM_SLICES": "2",
        },
        RankInfo(1, 4, "TPU"),
        id="tpu-multislice-first-slice",
    ),
    pytest.param(
        {
            "TPU_WORKER_ID": "1",
            "TPU_WORKER_HOSTNAMES": "a,b",
            "MEGASCALE_SLICE_ID": "x",
            "MEGASCALE_NUM_SLICES": "",
        },
        RankInfo(1, 2, "TPU"),
        id="tpu-garbage-megascale-means-one-slice",
    ),
    pytest.param(
        {"TPU_WORKER_ID": "1", "RANK": "7", "WORLD_SIZE": "8", "LOCAL_RANK": "7"},
        RankInfo(1, 2, "TPU"),
        id="tpu-wins-over-torchrun",
    ),
    # torchrun
    pytest.param(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"},
        RankInfo(3, 8, "torchrun"),
        id="torchrun",
    ),
    pytest.param(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": ""},
        RankInfo(3, 8, "torchrun"),
        id="torchrun-local-rank-present-but-empty",
    ),
    pytest.param({"RANK": "3", "WORLD_SIZE": "8"}, RankInfo(0, 1, "default"), id="rank-no-local"),
    pytest.param(
        {"RANK": "3", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
        RankInfo(1, 2, "SLURM"),
        id="rank-without-local-rank-falls-through-to-slurm",
    ),
    pytest.param(
        {
            "RANK": "5",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "SLURM_PROCID": "1",
            "SLURM_NTASKS": "4",
        },
        RankInfo(5, 8, "torchrun"),
        id="torchrun-wins-over-slurm",
    ),
    # Open MPI, PMIx, PMI
    pytest.param(
        {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16"},
        RankInfo(5, 16, "Open MPI"),
        id="open-mpi",
    ),
    pytest.param(
        {"OMPI_COMM_WORLD_RANK": "1", "PMIX_RANK": "1", "SLURM_PROCID": "0"},
        RankInfo(1, 2, "Open MPI"),
        id="open-mpi-wins-over-pmix-and-slurm",
    ),
    pytest.param({"PMIX_RANK": "2"}, RankInfo(2, 3, "PMIx"), id="pmix-without-size"),
    pytest.param({"PMIX_RANK": "2", "PMIX_SIZE": "4"}, RankInfo(2, 4, "PMIx"), id="pmix"),
    pytest.param({"PMI_RANK": "1", "PMI_SIZE": "4"}, RankInfo(1, 4, "PMI"), id="pmi"),
    pytest.param(
        {"PMI_RANK": "0", "PMI_SIZE": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
        RankInfo(0, 2, "PMI"),
        id="pmi-wins-over-slurm",
    ),
    # SLURM, Kubernetes
    pytest.param({"SLURM_PROCID": "7", "SLURM_NTASKS": "8"}, RankInfo(7, 8, "SLURM"), id="slurm"),
    pytest.param(
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "JOB_COMPLETION_INDEX": "3"},
        RankInfo(0, 1, "SLURM"),
        id="slurm-wins-over-job-index",
    ),
    pytest.param(
        {"JOB_COMPLETION_INDEX": "4"},
        RankInfo(4, 5, "Kubernetes indexed Job"),
        id="kubernetes-indexed-job",
    ),
    # Sizes and whitespace
    pytest.param(
        {"SLURM_PROCID": "6", "SLURM_NTASKS": "2"},
        RankInfo(6, 7, "SLURM"),
        id="size-smaller-than-rank-grows-to-rank-plus-one",
    ),
    pytest.param(
        {"SLURM_PROCID": " 2 ", "SLURM_NTASKS": "\t4\n"},
        RankInfo(2, 4, "SLURM"),
        id="whitespace-stripped",
    ),
    pytest.param({}, RankInfo(0, 1, "default"), id="empty-env"),
]


@pytest.mark.parametrize(("environ", "expected"), LAUNCHER_CASES)
def test_detect_rank_reads_each_launcher(environ, expected):
    assert detect_rank(environ) == expected


GARBAGE_CASES = [
    pytest.param({"TPU_WORKER_ID": "worker-1"}, id="tpu-worker-not-a-number"),
    pytest.param({"TPU_WORKER_ID": ""}, id="tpu-worker-empty"),
    pytest.param({"TPU_WORKER_ID": "   "}, id="tpu-worker-blank"),
    pytest.param({"RANK": "zero", "WORLD_SIZE": "8", "LOCAL_RANK": "0"}, id="rank-word"),
    pytest.param({"RANK": "1.0", "WORLD_SIZE": "8", "LOCAL_RANK": "0"}, id="rank-float"),
    pytest.param({"OMPI_COMM_WORLD_RANK": "0x1"}, id="ompi-hex"),
    pytest.param({"PMIX_RANK": "1e3"}, id="pmix-exponent"),
    pytest.param({"PMI_RANK": "", "PMI_SIZE": "4"}, id="pmi-empty-rank-size-alone"),
    pytest.param({"SLURM_PROCID": "N/A", "SLURM_NTASKS": "2"}, id="slurm-na"),
    pytest.param({"JOB_COMPLETION_INDEX": "None"}, id="job-index-none"),
    pytest.param({"WORLD_SIZE": "8", "SLURM_NTASKS": "2", "PMI_SIZE": "4"}, id="sizes-only"),
]


@pytest.mark.parametrize("environ", GARBAGE_CASES)
def test_detect_rank_ignores_garbage_values(environ):
    assert detect_rank(environ) == RankInfo(0, 1, "default")


@pytest.mark.parametrize(
    "environ", [c for c in GARBAGE_CASES if "JOB_COMPLETION_INDEX" not in c.values[0]]
)
def test_garbage_values_fall_through_to_the_next_launcher(environ):
    env = {**environ, "JOB_COMPLETION_INDEX": "2"}
    assert detect_rank(env) == RankInfo(2, 3, "Kubernetes indexed Job")


def test_garbage_world_size_is_replaced_by_rank_plus_one():
    assert detect_rank({"PMI_RANK": "3", "PMI_SIZE": "many"}) == RankInfo(3, 4, "PMI")
    assert detect_rank({"SLURM_PROCID": "3", "SLURM_NTASKS": ""}) == RankInfo(3, 4, "SLURM")


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"RANK": "-1", "WORLD_SIZE": "4", "LOCAL_RANK": "-1"}, id="torchrun"),
        pytest.param({"TPU_WORKER_ID": "-1"}, id="tpu"),
        pytest.param({"SLURM_PROCID": "-3", "SLURM_NTASKS": "4"}, id="slurm"),
    ],
)
def test_detect_rank_ignores_negative_ranks(environ):
    assert detect_rank(environ) == RankInfo(0, 1, "default")


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param(
            {"TPU_WORKER_ID": "0", "MEGASCALE_SLICE_ID": "1"}, id="slice-id-without-num-slices"
        ),
        pytest.param(
            {"TPU_WORKER_ID": "0", "MEGASCALE_SLICE_ID": "3", "MEGASCALE_NUM_SLICES": "2"},
            id="slice-id-past-num-slices",
        ),
        pytest.param(
            {"TPU_WORKER_ID": "0", "MEGASCALE_SLICE_ID": "-1", "MEGASCALE_NUM_SLICES": "2"},
            id="negative-slice-id",
        ),
    ],
)
def test_tpu_rank_is_always_below_world_size(environ):
    info = detect_rank(environ)
    assert 0 <= info.rank < info.world_size


_NON_TPU = [v for v in LAUNCHER_VARS if not v.startswith(("TPU_", "MEGASCALE_"))]
_env_values = st.one_of(
    st.integers(0, 10**6).map(str),
    st.text(alphabet="abc xyz.,-+_", max_size=6),  # no digits: never a number
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_NON_TPU), _env_values))
def test_non_negative_launcher_values_always_give_rank_below_world_size(environ):
    info = detect_rank(environ)
    assert 0 <= info.rank < info.world_size
    assert info.source in {
        "torchrun",
        "Open MPI",
        "PMIx",
        "PMI",
        "SLURM",
        "Kubernetes indexed Job",
        "default",
    }


def test_detect_rank_without_argument_reads_os_environ(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert detect_rank() == RankInfo(0, 1, "default")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert detect_rank() == RankInfo(3, 4, "Open MPI")


def test_rank_info_is_frozen():
    info = RankInfo(0, 1, "default")
    with pytest.raises(AttributeError):
        info.rank = 1  # type: ignore[misc]


# --------------------------------------------------------------------------
# JAX's state, faked in sys.modules: the order of sources
# --------------------------------------------------------------------------


def _fake_distributed(client, process_id=3, num_processes=4):
    state = SimpleNamespace(client=client, process_id=process_id, num_processes=num_processes)
    return SimpleNamespace(global_state=state)


class _FakeJax:
    """Counts calls, so a test can tell whether detect_rank asked the backend."""

    def __init__(self, index=2, count=5):
        self.calls = 0
        self._index, self._count = index, count

    def process_index(self):
        self.calls += 1
        return self._index

    def process_count(self):
        return self._count


def test_jax_distributed_state_wins_over_launcher_variables(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax._src.distributed", _fake_distributed(object()))
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "SLURM_PROCID": "1"}
    assert detect_rank(env) == RankInfo(3, 4, "jax.distributed")


def test_jax_distributed_without_a_client_is_not_initialised_and_ignored(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax._src.distributed", _fake_distributed(None))
    assert detect_rank({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == RankInfo(1, 2, "SLURM")
    assert detect_rank({}) == RankInfo(0, 1, "default")


def test_running_jax_backend_is_asked_only_when_no_launcher_answers(monkeypatch):
    fake_jax = _FakeJax()
    monkeypatch.setitem(sys.modules, "jax", fake_jax)
    bridge = SimpleNamespace(backends_are_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "jax._src.xla_bridge", bridge)
    assert detect_rank({"PMI_RANK": "1", "PMI_SIZE": "2"}) == RankInfo(1, 2, "PMI")
    assert fake_jax.calls == 0
    assert detect_rank({}) == RankInfo(2, 5, "jax backend")
    assert fake_jax.calls == 1


def test_jax_backend_that_is_not_running_is_never_started(monkeypatch):
    fake_jax = _FakeJax()
    monkeypatch.setitem(sys.modules, "jax", fake_jax)
    bridge = SimpleNamespace(backends_are_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "jax._src.xla_bridge", bridge)
    assert detect_rank({}) == RankInfo(0, 1, "default")
    assert fake_jax.calls == 0


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        ({}, RankInfo(0, 1, "default")),
        ({"cpu": object()}, RankInfo(2, 5, "jax backend")),
    ],
    ids=["no-backends", "cpu-backend"],
)
def test_older_jax_without_backends_are_initialized_uses_backends_dict(
    monkeypatch, backends, expected
):
    monkeypatch.setitem(sys.modules, "jax", _FakeJax())
    monkeypatch.setitem(sys.modules, "jax._src.xla_bridge", SimpleNamespace(_backends=backends))
    assert detect_rank({}) == expected


def test_detect_rank_does_not_import_jax():
    detect_rank({})
    assert not any(name in sys.modules for name in JAX_MODULES)


# --------------------------------------------------------------------------
# Real JAX, in a subprocess
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_JAX_SCRIPT = textwrap.dedent(
    """
    import sys

    import jax
    from jax._src import xla_bridge

    from roxxel.ranks import RankInfo, detect_rank

    port = int(sys.argv[1])
    before = detect_rank()
    assert before == RankInfo(0, 1, "default"), before
    assert not xla_bridge.backends_are_initialized(), "detect_rank started the backend"

    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=1, process_id=0
    )
    try:
        after = detect_rank()
        assert after == RankInfo(0, 1, "jax.distributed"), after
        assert not xla_bridge.backends_are_initialized(), "detect_rank started the backend"
    finally:
        jax.distributed.shutdown()
    print("OK", before.source, after.source)
    """
)


def test_real_jax_backend_stays_cold_and_distributed_initialize_is_detected():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OK", "default", "jax.distributed"], result.stderr
