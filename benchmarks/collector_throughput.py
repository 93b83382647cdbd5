"""Collector throughput: records/s into the files from 8 client processes, next to
the raw limit of ZeroMQ + msgpack on the same machine.

``python -m benchmarks.collector_throughput [--clients 8] [--records 250000] [--quick]
[--values varying|constant]``

* **roxxel**: one ``roxxel-aggregator`` daemon (``--bind tcp://127.0.0.1:0
  --no-echo --stats-interval 0``) as a subprocess; ``--clients`` processes
  (``multiprocessing`` spawn), each a ``roxxel.Logger(aggregator=<its
  endpoint>, metrics_from_all_ranks=True, close_timeout=300)`` with its own
  rank (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``). Every client creates its
  Logger, logs one warm-up record, waits at a barrier, logs ``--records``
  metrics rows (4 float keys: by default cycling through
  ``caller_cost.METRICS_SERIES``, rows like a training run's whose ``loss``,
  ``grad_norm`` and ``accuracy`` change every row with all 17 digits and
  whose ``lr`` is constant; ``--values constant``: the same dict every call)
  as fast as it can and closes its Logger. Time:
  from the barrier (the driver passes it last) until the last client's
  ``close()`` returned (it waits for the collector's acknowledgement of
  everything, i.e. written). The rows are then counted in the CSV. The same
  with WARNING lines (``log_message``), counted in the system log.
* **raw limit**: the same number of processes, each encodes the same records
  as a roxxel client puts them on the wire (metrics: runs of rows with the
  same keys, ``["r", keys, [ts, ...], [step, ...], [[4 floats], ...]]`` from
  :func:`roxxel.schema.metrics_records`; lines: ``["l", ts, 30, text]``) with
  msgpack in batches of 4096 rows and PUSHes them to one PULL process that
  only ``msgpack.unpackb``\\ s each batch and counts its rows. Time from the
  barrier until the PULL process has counted all of them.

Budget (DESIGN.md): roxxel >= 500k records/s and >= 50 % of the raw limit.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from roxxel import schema

from .harness import collector_usage, cpu_seconds, forget_roxxel_env, start_daemon
from .harness import progress as stderr_progress
from .workload import METRICS, METRICS_SERIES

__all__ = ["main", "run"]

PREFIX = "bench"
LINE = "step finished: loss 0.12345 lr 0.00030"
WARNING = 30
BATCH = 4096
DEFAULT_CLIENTS = 8
DEFAULT_RECORDS = 250_000
QUICK_RECORDS = 5_000
BUDGET_RECORDS_S = 500_000
BUDGET_FRACTION = 0.5
APIS = ("log_metrics_summary", "log_message")
VALUES = {
    "varying": "1,024 rows like a training run's cycled (caller_cost.METRICS_SERIES)",
    "constant": "the same dict every call (caller_cost.METRICS)",
}


# -- roxxel: one daemon, N client processes ---------------------------------------


def _roxxel_client(
    rank: int,
    clients: int,
    endpoint: str,
    api: str,
    n: int,
    barrier: Any,
    out: Any,
    series: list[dict[str, float]],
) -> None:
    forget_roxxel_env()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(clients), LOCAL_RANK=str(rank))
    from roxxel import Logger

    log_dir = tempfile.mkdtemp(prefix="roxxel-bench-client-")  # the client's own (unused)
    try:
        logger = Logger(
            log_dir,
            filename_prefix=PREFIX,
            aggregator=endpoint,
            close_timeout=300,
            metrics_from_all_ranks=True,
        )
        if api == "log_metrics_summary":
            logger.log_metrics_summary(step=-1, metrics=METRICS)
        else:
            logger.log_message(LINE, WARNING)
        barrier.wait()
        if api == "log_metrics_summary":
            k = len(series)
            for i in range(n):
                logger.log_metrics_summary(step=i, metrics=series[i % k])
        else:
            for _ in range(n):
                logger.log_message(LINE, WARNING)
        logger.close()
        out.put((rank, time.perf_counter(), os.listdir(log_dir)))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def _count(api: str, log_dir: str) -> int:
    """Records in the files, warm-up records included."""
    if api == "log_metrics_summary":
        path = os.path.join(log_dir, f"{PREFIX}_metrics.csv")
        with open(path, encoding="utf-8") as f:
            return max(0, sum(1 for _ in f) - 1)
    path = os.path.join(log_dir, f"{PREFIX}_system.log")
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.endswith(f"] {LINE}\n"))


def run_roxxel(
    api: str,
    clients: int,
    n: int,
    series: list[dict[str, float]],
    daemon_options: Sequence[str] = (),
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="roxxel-bench-collector-")
    daemon = None
    try:
        daemon, endpoint = start_daemon(tmp, PREFIX, *daemon_options)
        cpu0, own0 = collector_usage(daemon.pid)[0], cpu_seconds(daemon.pid)
        barrier, out = ctx.Barrier(clients + 1), ctx.Queue()
        procs = [
            ctx.Process(
                target=_roxxel_client, args=(rank, clients, endpoint, api, n, barrier, out, series)
            )
            for rank in range(clients)
        ]
        for p in procs:
            p.start()
        barrier.wait(timeout=120)
        t0 = time.perf_counter()
        ends = [out.get(timeout=600) for _ in procs]
        t_last = max(end for _, end, _ in ends)
        on_disk_at_close = _count(api, tmp)
        for p in procs:
            p.join(60)
        codes = [p.exitcode for p in procs]
        collector_cpu = collector_usage(daemon.pid)[0] - cpu0
        own_cpu = cpu_seconds(daemon.pid) - own0
        daemon.terminate()
        daemon.wait(60)
        on_disk = _count(api, tmp)
        return {
            "seconds": t_last - t0,
            "records": clients * n,
            "on_disk_at_close": on_disk_at_close - clients,  # minus the warm-up records
            "on_disk": on_disk - clients,
            "client_exit_codes": codes,
            "client_leftovers": [left for _, _, left in ends if left],
            "cpu_per_record": collector_cpu / (clients * n),
            # The collector process alone (without its sink processes): what
            # bounds its records/s where the host has cores to spare.
            "own_cpu_per_record": own_cpu / (clients * n),
        }
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# -- the floor: one process decoding the batches and writing .5f CSV lines ----------


def run_floor(n: int, series: list[dict[str, float]]) -> float:
    """CPU per metrics row of the least a collector must do: decode the same
    msgpack batches, format each row as the CSV's ``.5f`` line, write it."""
    batches = [
        msgpack.packb(_raw_batch("log_metrics_summary", first, min(BATCH, n - first), series))
        for first in range(0, n, BATCH)
    ]
    with tempfile.TemporaryFile("w") as f:
        cpu0 = time.process_time()
        for data in batches:
            for record in msgpack.unpackb(data):
                _, keys, _, steps, rows = record
                fmt = "%d" + ",%.5f" * len(keys) + "\n"
                f.write(
                    "".join([fmt % (step, *row) for step, row in zip(steps, rows, strict=True)])
                )
        f.flush()
        return (time.process_time() - cpu0) / n


# -- raw limit: PUSH x N -> PULL that only decodes -------------------------------


def _raw_batch(api: str, first: int, size: int, series: list[dict[str, float]]) -> list[Any]:
    """The records of one batch, as a roxxel client puts them on the wire."""
    if api == "log_metrics_summary":
        keys, k = tuple(series[0]), len(series)
        entries = [
            ("r", keys, time.time(), i, tuple(series[i % k].values()))
            for i in range(first, first + size)
        ]
        return schema.metrics_records(entries)
    return [["l", time.time(), WARNING, LINE] for _ in range(size)]


def _rows(records: list[Any]) -> int:
    return sum(len(r[4]) if r[0] in schema.METRICS_KINDS else 1 for r in records)


def _raw_pusher(
    endpoint: str, api: str, n: int, barrier: Any, series: list[dict[str, float]]
) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, -1)
    sock.connect(endpoint)
    packb = msgpack.packb
    barrier.wait()
    sent = 0
    while sent < n:
        size = min(BATCH, n - sent)
        sock.send(packb(_raw_batch(api, sent, size, series)))
        sent += size
    sock.close()
    ctx.term()


def _raw_puller(api: str, total: int, barrier: Any, out: Any, port_out: Any) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    port_out.put(port)
    unpackb = msgpack.unpackb
    barrier.wait()
    count = 0
    while count < total:
        count += _rows(unpackb(sock.recv()))
    out.put((time.perf_counter(), count))
    sock.close(linger=0)
    ctx.term()


def run_raw(api: str, clients: int, n: int, series: list[dict[str, float]]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, out, port_out = ctx.Barrier(clients + 2), ctx.Queue(), ctx.Queue()
    puller = ctx.Process(target=_raw_puller, args=(api, clients * n, barrier, out, port_out))
    puller.start()
    endpoint = f"tcp://127.0.0.1:{port_out.get(timeout=120)}"
    pushers = [
        ctx.Process(target=_raw_pusher, args=(endpoint, api, n, barrier, series))
        for _ in range(clients)
    ]
    for p in pushers:
        p.start()
    barrier.wait(timeout=120)
    t0 = time.perf_counter()
    t_end, count = out.get(timeout=600)
    for p in (*pushers, puller):
        p.join(60)
    return {"seconds": t_end - t0, "records": clients * n, "counted": count}


# -- the table ---------------------------------------------------------------------


def format_table(
    results: dict[str, Any],
    clients: int,
    n: int,
    values: str = "varying",
    files: str = "",
    sink_processes: str = "",
) -> str:
    lines = [
        f"collector throughput: {clients} client processes x {n:,} records "
        f"(metrics: 4 floats, {VALUES[values]}; metrics files: {files or 'csv,jsonl'}; "
        f"sink processes: {sink_processes or 'auto'}), "
        f"{os.cpu_count()} CPUs; raw limit = {clients} msgpack PUSH -> 1 PULL that only "
        f"decodes (batches of {BATCH})",
        "",
        f"{'case':<36}{'roxxel':>14}{'raw limit':>14}{'ratio':>9}{'budget':>24}",
    ]
    for api in APIS:
        ours, raw = results[api]["roxxel"], results[api]["raw"]
        ours_rate = ours["on_disk"] / ours["seconds"]
        raw_rate = raw["counted"] / raw["seconds"]
        ratio = ours_rate / raw_rate
        met = ours_rate >= BUDGET_RECORDS_S and ratio >= BUDGET_FRACTION
        budget = f">=500k/s, >=50%: {'met' if met else 'MISSED'}"
        lines.append(
            f"{api + ' records/s':<36}{ours_rate:>14,.0f}{raw_rate:>14,.0f}"
            f"{ratio:>8.0%}{budget:>25}"
        )
    floor = results.get("floor")
    if floor:
        mine = results["log_metrics_summary"]["roxxel"]["cpu_per_record"]
        lines += [
            "",
            "collector CPU per metrics row (its sink processes included): "
            f"{mine * 1e6:.2f} µs; floor {floor * 1e6:.2f} µs "
            "(one process decoding the same batches and writing each row as a .5f CSV line): "
            f"{mine / floor:.1f}x (budget <= 2x: {'met' if mine <= 2 * floor else 'MISSED'})",
        ]
    for api in APIS:
        ours = results[api]["roxxel"]
        own = ours.get("own_cpu_per_record", ours["cpu_per_record"])
        lines.append(
            f"{api}: the collector process alone {own * 1e6:.2f} µs per record "
            f"(all its processes {ours['cpu_per_record'] * 1e6:.2f} µs): at most "
            f"{1 / own if own else float('inf'):,.0f} records/s with cores to spare"
        )
    lines += ["", "notes:"]
    for api in APIS:
        ours, raw = results[api]["roxxel"], results[api]["raw"]
        lines.append(
            f"  {api}: roxxel {ours['on_disk']:,} of {ours['records']:,} records in the files "
            f"({ours['on_disk_at_close']:,} when the last close() returned) in "
            f"{ours['seconds']:.2f} s; raw {raw['counted']:,} of {raw['records']:,} decoded in "
            f"{raw['seconds']:.2f} s"
        )
        for problem in _problems(results[api]):
            lines.append(f"  !! {api}: {problem}")
    return "\n".join(lines)


def _problems(case: dict[str, Any]) -> list[str]:
    ours, raw = case["roxxel"], case["raw"]
    problems = []
    if ours["on_disk"] != ours["records"]:
        problems.append(f"{ours['on_disk']:,} of {ours['records']:,} records in the files")
    if ours["on_disk_at_close"] != ours["records"]:
        problems.append(
            f"only {ours['on_disk_at_close']:,} records in the files when the last close() returned"
        )
    if any(ours["client_exit_codes"]):
        problems.append(f"client exit codes {ours['client_exit_codes']}")
    if ours["client_leftovers"]:
        problems.append(f"files left in a client's log dir: {ours['client_leftovers']}")
    if raw["counted"] != raw["records"]:
        problems.append(f"raw: {raw['counted']:,} of {raw['records']:,} counted")
    return problems


def run(
    clients: int,
    n: int,
    series: list[dict[str, float]] = METRICS_SERIES,
    progress: Any = None,
    daemon_options: Sequence[str] = (),
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for api in APIS:
        results[api] = {}
        if progress:
            progress(f"roxxel {api}")
        results[api]["roxxel"] = run_roxxel(api, clients, n, series, daemon_options)
        if progress:
            progress(f"raw {api}")
        results[api]["raw"] = run_raw(api, clients, n, series)
    if progress:
        progress("floor")
    results["floor"] = run_floor(clients * n, series)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collector_throughput")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--records", type=int, help=f"per client (default {DEFAULT_RECORDS:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RECORDS:,} records per client"
    )
    parser.add_argument(
        "--values",
        choices=sorted(VALUES),
        default="varying",
        help="the metrics logged: %(default)s (default) or the same dict every call",
    )
    parser.add_argument(
        "--metrics-files",
        metavar="LIST",
        help="the daemon's --metrics-files (default: its own, csv,jsonl), e.g. "
        "csv,jsonl,tensorboard to measure the TensorBoard sink's cost",
    )
    parser.add_argument(
        "--sink-processes",
        choices=("auto", "on", "off"),
        help="the daemon's --sink-processes (default: its own, auto)",
    )
    args = parser.parse_args(argv)
    series = METRICS_SERIES if args.values == "varying" else [METRICS]
    n = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    options: tuple[str, ...] = ()
    if args.metrics_files:
        options += ("--metrics-files", args.metrics_files)
    if args.sink_processes:
        options += ("--sink-processes", args.sink_processes)

    results = run(args.clients, n, series, stderr_progress, options)
    print(
        format_table(
            results,
            args.clients,
            n,
            args.values,
            args.metrics_files or "",
            args.sink_processes or "",
        )
    )
    return 1 if any(_problems(results[api]) for api in APIS) else 0


if __name__ == "__main__":
    sys.exit(main())
