"""Which process of the run this is, without ever starting JAX's backend.

Order (first that answers wins):

1. JAX's distributed state, when ``jax.distributed.initialize()`` has run;
2. launcher variables: TPU (``TPU_WORKER_ID``, multislice
   ``MEGASCALE_SLICE_ID``/``MEGASCALE_NUM_SLICES``), torchrun
   (``RANK``/``WORLD_SIZE`` with ``LOCAL_RANK``), Open MPI
   (``OMPI_COMM_WORLD_RANK``/``SIZE``), PMIx (``PMIX_RANK``), MPICH/Intel MPI
   (``PMI_RANK``/``PMI_SIZE``), SLURM (``SLURM_PROCID``/``SLURM_NTASKS``),
   Kubernetes indexed Jobs (``JOB_COMPLETION_INDEX``);
3. ``jax.process_index()``, only when JAX's backend is already initialised;
4. rank 0 of 1.

torchrun and the MPI launchers come before SLURM because under ``srun`` a
per-node launcher's variables name the process, SLURM's only the task.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RankInfo", "detect_rank"]


@dataclass(frozen=True, slots=True)
class RankInfo:
    rank: int
    world_size: int
    source: str


def detect_rank(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Return this process's rank and the run's process count."""
    env = os.environ if environ is None else environ
    return (
        _from_jax_distributed()
        or _from_launcher(env)
        or _from_jax_backend()
        or RankInfo(0, 1, "default")
    )


def _from_jax_distributed() -> RankInfo | None:
    # Only look if the user imported it: importing jax ourselves costs a second.
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    if state is None or getattr(state, "client", None) is None:
        return None
    return RankInfo(int(state.process_id), int(state.num_processes), "jax.distributed")


def _from_jax_backend() -> RankInfo | None:
    # jax.process_index() starts the backend if it is not running, which would
    # make a later jax.distributed.initialize() fail: ask only a running one.
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is None:
        return None
    initialized = getattr(bridge, "backends_are_initialized", None)
    if not (initialized() if initialized else getattr(bridge, "_backends", None)):
        return None
    jax = sys.modules["jax"]
    return RankInfo(int(jax.process_index()), int(jax.process_count()), "jax backend")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    # Some launch scripts say -1 for "not distributed": not a rank.
    return number if number is not None and number >= 0 else None


def _from_launcher(env: Mapping[str, str]) -> RankInfo | None:
    worker = _int(env, "TPU_WORKER_ID")
    if worker is not None:
        hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
        per_slice = max(len(hosts), worker + 1)
        slice_id = _int(env, "MEGASCALE_SLICE_ID") or 0
        slices = _int(env, "MEGASCALE_NUM_SLICES") or 1
        rank = slice_id * per_slice + worker
        return RankInfo(rank, max(slices * per_slice, rank + 1), "TPU")
    pairs = (
        ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", None),
        ("PMIx", "PMIX_RANK", "PMIX_SIZE", None),
        ("PMI", "PMI_RANK", "PMI_SIZE", None),
        ("SLURM", "SLURM_PROCID", "SLURM_NTASKS", None),
        ("Kubernetes indexed Job", "JOB_COMPLETION_INDEX", None, None),
    )
    for source, rank_var, size_var, required in pairs:
        rank = _int(env, rank_var)
        if rank is None or (required is not None and required not in env):
            continue
        size = _int(env, size_var) if size_var else None
        return RankInfo(rank, max(size or 0, rank + 1), source)
    return None
