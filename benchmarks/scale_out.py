"""Scale-out through NATS JetStream (issue 19): N relays and one writer against
one collector, in the same run, on the same machine.

``python -m benchmarks.scale_out [--relays 2] [--clients 4] [--records 50000]
[--kind lines|metrics|both] [--quick|--smoke]`` (``--clients``: per relay; the
single collector takes all of them). Needs nats-py and ``nats-server``.

Every client is a process (``multiprocessing`` spawn) running
``collector_throughput``'s client: a ``roxxel.Logger(aggregator=<endpoint>,
filename_prefix="bench", metrics_from_all_ranks=True)`` with its own rank,
one warm-up record, a barrier, ``--records`` calls as fast as it can
(WARNING lines, or metrics rows cycling through ``METRICS_SERIES``), then
``close()`` (which returns once everything it sent is acknowledged). For
each kind, three passes, each with ``relays x clients`` such clients:

* **single collector**: every client into one ``roxxel-aggregator --bind
  ... --log-dir ... --prefix bench``. Records/s: from the barrier until
  the driver, which follows the files as they grow, has seen every record in
  them (system-log lines, or CSV rows).
* **relay tier**, then **writer tier**, on a fresh 3-node JetStream cluster
  (``tests.nats_cluster``, 127.0.0.1, ``--stream-replicas 3``): ``--clients``
  clients into each of ``--relays`` relays (``--jetstream URLS --run
  bench``), no writer running. Relay tier: from the barrier until the last
  client's ``close()`` returned -- a relay acknowledges a batch only once
  JetStream stored it on a quorum, so that is every record in the stream.
  Then one writer (``--from-jetstream URLS --run bench``) is started on the
  full stream; writer tier: from its ready line until every record is in its
  files. Each tier runs alone here, so the two rates are per tier, not
  competing for the cores with the other.
* **scale-out (end to end)**, on another fresh cluster: relays and writer
  running together; from the barrier until every record is in the writer's
  files.

Latency: in the single-collector and the end-to-end pass, one more client
(the probe; in the scale-out pass connected to relay 0) logs a WARNING line
``probe <k> <time.time()>`` every 2 ms (line 0 before the barrier, waited
for); the driver reads the system log's new bytes every 2 ms and notes when
each probe line appears. p50/p99 of (seen - logged) over the probe lines
logged between the barrier and the last load record on disk (``load``), and
over those of the IDLE_S after every load client closed (``idle``: the
probe alone). Resolution: the 2 ms poll.

CPU per record (notes): each daemon's own user + system time
(``/proc/<pid>/stat``) over the measured span, divided by the records.

Afterwards every file is checked: each rank's records exactly once (lines
per rank; metrics ``(rank, step)`` pairs, and as many JSONL lines as CSV
rows), every probe line once. A record missing or twice makes the exit
code 1 and a ``!!`` line.

Budget (issue 19): end to end >= 50 % of the single collector's records/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tests.nats_cluster import NatsCluster

from .collector_throughput import _roxxel_client
from .harness import cpu_seconds, forget_roxxel_env, progress, roxxel_free_env, start_daemon
from .stats import percentile
from .workload import MESSAGE, METRICS_SERIES, PREFIX

__all__ = ["main", "run"]

KINDS = {"lines": "log_message", "metrics": "log_metrics_summary"}
DEFAULT_RELAYS = 2
DEFAULT_CLIENTS = 4
DEFAULT_RECORDS = 50_000
QUICK_RECORDS = 500
REPLICAS = 3
WARNING = 30
POLL_S = 0.002  # how often the driver reads the files' new bytes
PROBE_EVERY_S = 0.002
IDLE_S = 0.5  # the probe alone after the load: latency at rest
WAIT_S = 300.0  # the longest any pass waits for its records
BUDGET_FRACTION = 0.5
LINE_END = f"] {MESSAGE}\n".encode()
PROBE_TAG = b"] probe "


# -- processes -------------------------------------------------------------------


def _end(proc: Any) -> None:
    """SIGTERM by PID, then SIGKILL if it is still there after 15 s
    (a ``subprocess.Popen`` or a ``multiprocessing.Process``)."""
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    if proc.pid is not None and proc.is_alive():
        proc.terminate()
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _aggregator(args: list[str], stderr_path: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m aggregator ARGS`` (a relay or a writer), once it printed its
    ready line; its stderr goes to ``stderr_path`` (read into the notes)."""
    with open(stderr_path, "a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--stats-interval", "0", *args],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
            env=roxxel_free_env(),
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " ready " not in line:
        _end(proc)
        with open(stderr_path) as f:
            raise RuntimeError(f"{' '.join(args[:2])} did not start: {line!r} {f.read()[-2000:]}")
    return proc, line


def _probe(endpoint: str, rank: int, world: int, barrier: Any, stop: Any, out: Any) -> None:
    """A WARNING line ``probe <k> <time.time()>`` every PROBE_EVERY_S until ``stop``
    (line 0, a warm-up before the barrier, waited for until written: a first
    record takes the Logger longer)."""
    forget_roxxel_env()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from roxxel import Logger

    log_dir = tempfile.mkdtemp(prefix="roxxel-bench-probe-")
    try:
        logger = Logger(log_dir, filename_prefix=PREFIX, aggregator=endpoint, close_timeout=300)
        logger.log_message(f"probe 0 {time.time()!r}", WARNING)
        logger.flush(WAIT_S)
        barrier.wait()
        k = 1
        while not stop.is_set():
            logger.log_message(f"probe {k} {time.time()!r}", WARNING)
            k += 1
            stop.wait(PROBE_EVERY_S)
        logger.close()
        out.put(k)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


class _Follow:
    """Follows a run's files as they grow: load records seen so far (lines
    with MESSAGE, or CSV rows) and, per probe line, when it appeared."""

    def __init__(self, log_dir: str, api: str) -> None:
        self.system_log = os.path.join(log_dir, f"{PREFIX}_system.log")
        self.csv = os.path.join(log_dir, f"{PREFIX}_metrics.csv")
        self.api = api
        self.offsets = {self.system_log: 0, self.csv: 0}
        self.records = 0
        self.probes: dict[int, tuple[float, float]] = {}  # k -> (logged, seen)

    def _new(self, path: str) -> bytes:
        """The whole lines added to ``path`` since the last call."""
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets[path])
                data = f.read()
        except FileNotFoundError:
            return b""
        end = data.rfind(b"\n") + 1
        self.offsets[path] += end
        return data[:end]

    def poll(self) -> None:
        seen = time.time()
        lines = self._new(self.system_log)
        if self.api == "log_message":
            self.records += lines.count(LINE_END)
        else:
            self.records += self._new(self.csv).count(b"\n")
        at = lines.find(PROBE_TAG)
        while at >= 0:
            stop = lines.index(b"\n", at)
            k, logged = lines[at + len(PROBE_TAG) : stop].split()
            self.probes.setdefault(int(k), (float(logged), seen))
            at = lines.find(PROBE_TAG, stop)

    def wait(self, target: int, probes: int = 0, timeout: float = WAIT_S) -> bool:
        """Poll until ``target`` records (CSV: rows and the header) and
        ``probes`` probe lines are in; False if not within ``timeout``."""
        deadline = time.perf_counter() + timeout
        while True:
            self.poll()
            if self.records >= target and len(self.probes) >= probes:
                return True
            if time.perf_counter() > deadline:
                return False
            time.sleep(POLL_S)

    def latency_us(self, start: float, end: float) -> list[int]:
        """Sorted delays of the probe lines logged between ``start`` and ``end`` (wall clock)."""
        return sorted(
            int((seen - logged) * 1e6)
            for logged, seen in self.probes.values()
            if start <= logged <= end
        )


# -- one pass ------------------------------------------------------------------------


class _Pass:
    """The clients of one pass (and the probe): started, released, ended."""

    def __init__(self, api: str, endpoints: list[str], clients: int, n: int, probe: bool) -> None:
        ctx = mp.get_context("spawn")
        self.total = len(endpoints) * clients
        world = self.total + 1  # the probe is the last rank
        parties = self.total + 1 + (1 if probe else 0)
        self.barrier, self.out, self.probe_out = ctx.Barrier(parties), ctx.Queue(), ctx.Queue()
        self.stop = ctx.Event()
        what = (api, n, self.barrier, self.out, METRICS_SERIES)  # collector_throughput's client
        self.procs = [
            ctx.Process(
                target=_roxxel_client, args=(rank, world, endpoints[rank // clients], *what)
            )
            for rank in range(self.total)
        ]
        if probe:
            self.procs.append(
                ctx.Process(
                    target=_probe,
                    args=(endpoints[0], self.total, world, self.barrier, self.stop, self.probe_out),
                )
            )

    def __enter__(self) -> _Pass:
        for p in self.procs:
            p.start()
        return self

    def go(self) -> tuple[float, float]:
        """Release everyone at the barrier: (perf_counter, time.time()) then."""
        self.barrier.wait(timeout=120)
        return time.perf_counter(), time.time()

    def closes(self) -> tuple[float, list[Any]]:
        """When the last client's close() returned (perf_counter), and what each
        client left in its own log dir (nothing, normally)."""
        ends = [self.out.get(timeout=WAIT_S) for _ in range(self.total)]
        return max(end for _, end, _ in ends), [left for _, _, left in ends if left]

    def probe_count(self) -> int:
        self.stop.set()
        return self.probe_out.get(timeout=WAIT_S)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(30 if exc[0] is None else 0)
        self.codes = [p.exitcode for p in self.procs]
        for p in self.procs:
            _end(p)


def _expected(api: str, total: int, n: int) -> int:
    """What :class:`_Follow` counts once everything is in: load records and
    warm-ups (CSV: plus the header line)."""
    return total * (n + 1) + (1 if api == "log_metrics_summary" else 0)


def _loaded(
    api: str, follow: _Follow, clients: _Pass, n: int, cpu: Callable[[], list[float]]
) -> dict[str, Any]:
    """Release the clients, wait for the load on disk, then for the probe's last
    line; the measures (``cpu``: the CPU seconds of the daemons so far, read when
    released and when every record is on disk)."""
    cpu0 = cpu()
    t0, w0 = clients.go()
    complete = follow.wait(_expected(api, clients.total, n))
    t_done, w_done = time.perf_counter(), time.time()
    cpu_s = [after - before for before, after in zip(cpu0, cpu(), strict=True)]
    last_close, leftovers = clients.closes()
    w_idle = time.time()  # every load client closed: the probe alone from here
    follow.wait(sys.maxsize, timeout=IDLE_S)  # polls the files for IDLE_S
    probes = clients.probe_count()
    follow.wait(0, probes, timeout=60)
    return {
        "seconds": t_done - t0,
        "complete": complete,
        "close_s": last_close - t0,
        "leftovers": leftovers,
        "probes": probes,
        "latency_us": follow.latency_us(w0, w_done),
        "idle_latency_us": follow.latency_us(w_idle, w_idle + IDLE_S),
        "cpu_s": cpu_s,
    }


def _cpu(procs: Sequence[subprocess.Popen[str]]) -> float:
    return sum(cpu_seconds(p.pid) for p in procs if p.poll() is None)


def run_single(api: str, relays: int, clients: int, n: int, tmp: str) -> dict[str, Any]:
    log_dir = os.path.join(tmp, "single")
    daemon, endpoint = start_daemon(log_dir, PREFIX)
    try:
        follow = _Follow(log_dir, api)
        with _Pass(api, [endpoint] * relays, clients, n, probe=True) as load:
            result = _loaded(api, follow, load, n, lambda: [_cpu([daemon])])
        result["codes"] = load.codes
        result["cpu_s"] = {"collector": result["cpu_s"][0]}
    finally:
        _end(daemon)
    result["problems"] = _check(api, log_dir, load.total, n, result)
    return result


class _ScaleOut:
    """A fresh 3-node cluster and ``relays`` relays of run PREFIX on it (a
    context: on leaving, the relays and the writer are ended, then the cluster)."""

    def __init__(self, relays: int, tmp: str) -> None:
        self.relays, self.tmp = relays, tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.endpoints: list[str] = []
        self.cluster = NatsCluster(os.path.join(tmp, "nats"))

    def __enter__(self) -> _ScaleOut:
        try:
            self.cluster.start()
            self.nats = [node.process for node in self.cluster.nodes if node.process]
            for i in range(self.relays):
                args = ["--bind", "tcp://127.0.0.1:0", "--jetstream", self.cluster.urls]
                _, line = self._start(args, f"relay{i}")
                self.endpoints.append(line.split("ready on ", 1)[1].split()[0])
        except BaseException:
            self.__exit__()
            raise
        return self

    def writer(self, log_dir: str) -> subprocess.Popen[str]:
        args = ["--from-jetstream", self.cluster.urls, "--log-dir", log_dir, "--no-echo"]
        return self._start(args, "writer")[0]

    def _start(self, args: list[str], name: str) -> tuple[subprocess.Popen[str], str]:
        more = ["--run", PREFIX, "--stream-replicas", str(REPLICAS)]
        proc, line = _aggregator([*args, *more], os.path.join(self.tmp, f"{name}.err"))
        self.procs.append(proc)
        return proc, line

    def __exit__(self, *exc: object) -> None:
        try:
            for p in reversed(self.procs):  # the writer, the relays; then the cluster
                _end(p)
        finally:
            self.cluster.close()


def run_tiers(api: str, relays: int, clients: int, n: int, tmp: str) -> dict[str, Any]:
    """Relays alone into the stream; then one writer alone out of it."""
    log_dir = os.path.join(tmp, "files")
    with _ScaleOut(relays, tmp) as net:
        relay_procs, nats = net.procs[:], net.nats
        with _Pass(api, net.endpoints, clients, n, probe=False) as load:
            cpu0 = _cpu(relay_procs), _cpu(nats)
            t0, _ = load.go()
            last_close, leftovers = load.closes()
            relay_cpu = _cpu(relay_procs) - cpu0[0], _cpu(nats) - cpu0[1]
        follow = _Follow(log_dir, api)
        writer = [net.writer(log_dir)]
        t1 = time.perf_counter()
        cpu1 = _cpu(writer), _cpu(nats)
        complete = follow.wait(_expected(api, load.total, n))
        writer_s = time.perf_counter() - t1
        writer_cpu = _cpu(writer) - cpu1[0], _cpu(nats) - cpu1[1]
    result = {
        "relay_s": last_close - t0,
        "writer_s": writer_s,
        "complete": complete,
        "leftovers": leftovers,
        "codes": load.codes,
        "cpu_s": {
            "relays": relay_cpu[0],
            "nats (relay tier)": relay_cpu[1],
            "writer": writer_cpu[0],
            "nats (writer tier)": writer_cpu[1],
        },
        "said": _said(tmp),
    }
    result["problems"] = _check(api, log_dir, load.total, n, result)
    return result


def run_end_to_end(api: str, relays: int, clients: int, n: int, tmp: str) -> dict[str, Any]:
    """Relays and the writer together, and the probe through relay 0."""
    log_dir = os.path.join(tmp, "files")
    with _ScaleOut(relays, tmp) as net:
        net.writer(log_dir)
        follow = _Follow(log_dir, api)
        groups = net.procs[:relays], net.procs[relays:], net.nats
        with _Pass(api, net.endpoints, clients, n, probe=True) as load:
            result = _loaded(api, follow, load, n, lambda: [_cpu(group) for group in groups])
    result["codes"] = load.codes
    result["cpu_s"] = dict(zip(("relays", "writer", "nats"), result["cpu_s"], strict=True))
    result["said"] = _said(tmp)
    result["problems"] = _check(api, log_dir, load.total, n, result)
    return result


def _said(tmp: str) -> list[str]:
    """What the relays and the writer wrote on stderr (warnings), a few lines each."""
    said = []
    for name in sorted(os.listdir(tmp)):
        if name.endswith(".err"):
            with open(os.path.join(tmp, name), errors="replace") as f:
                lines = [ln.rstrip() for ln in f if ln.strip()]
            said += [f"{name[:-4]}: {ln[:300]}" for ln in lines[:3]]
            if len(lines) > 3:
                said.append(f"{name[:-4]}: ... {len(lines) - 3} more line(s)")
    return said


# -- the files afterwards ----------------------------------------------------------


def _check(api: str, log_dir: str, total: int, n: int, result: dict[str, Any]) -> list[str]:
    """Every record of every rank exactly once, every probe line once."""
    problems = []
    if not result["complete"]:
        problems.append(f"not every record was in the files after {WAIT_S:.0f} s")
    if any(result["codes"]):
        problems.append(f"client exit codes {result['codes']}")
    if result["leftovers"]:
        problems.append(f"files left in a client's log dir: {result['leftovers']}")
    expected = Counter({(rank, step): 1 for rank in range(total) for step in range(-1, n)})
    if api == "log_metrics_summary":
        seen = _csv_rows(log_dir)
        with open(os.path.join(log_dir, f"{PREFIX}_metrics.jsonl"), "rb") as f:
            jsonl = sum(1 for _ in f)
        if jsonl != sum(seen.values()):
            problems.append(f"{jsonl:,} JSONL lines for {sum(seen.values()):,} CSV rows")
    else:
        # A line has no step: each rank's lines counted, as if numbered.
        per_rank = _lines_per_rank(log_dir, LINE_END)
        seen = Counter({(r, s): 1 for r, count in per_rank.items() for s in range(-1, count - 1)})
    missing, twice = expected - seen, seen - expected
    if missing:
        problems.append(f"{sum(missing.values()):,} of {total * (n + 1):,} records missing")
    if twice:
        problems.append(f"{sum(twice.values()):,} records more than once or unexpected")
    probes = result.get("probes")
    if probes is not None:
        found = _lines_per_rank(log_dir, PROBE_TAG, probe=True)
        if found != Counter(range(probes)):
            problems.append(f"{len(found):,} probe lines of {probes:,} ({found.total():,} in all)")
    result["on_disk"] = sum(seen.values())
    return problems


def _csv_rows(log_dir: str) -> Counter[tuple[int, int]]:
    with open(os.path.join(log_dir, f"{PREFIX}_metrics.csv"), encoding="utf-8") as f:
        header = next(f).rstrip("\n").split(",")
        step, rank = header.index("step"), header.index("rank")
        rows = Counter()
        for line in f:
            cells = line.split(",", max(step, rank) + 1)
            rows[int(cells[rank] or 0), int(cells[step])] += 1
    return rows


def _lines_per_rank(log_dir: str, tag: bytes, probe: bool = False) -> Counter[int]:
    """Lines ending with ``tag`` per rank; ``probe``: probe lines per number instead."""
    found: Counter[int] = Counter()
    with open(os.path.join(log_dir, f"{PREFIX}_system.log"), "rb") as f:
        for line in f:
            if probe:
                at = line.find(tag)
                if at >= 0:
                    found[int(line[at + len(tag) :].split()[0])] += 1
            elif line.endswith(tag):
                at = line.find(b"[rank ")
                found[int(line[at + 6 : line.index(b"]", at)]) if at >= 0 else 0] += 1
    return found


# -- the table ---------------------------------------------------------------------


def _rates(case: dict[str, Any], total: int, n: int) -> dict[str, float]:
    records = total * n
    return {
        "single": records / case["single"]["seconds"],
        "end to end": records / case["end to end"]["seconds"],
        "relay tier": records / case["tiers"]["relay_s"],
        "writer tier": records / case["tiers"]["writer_s"],
    }


def _ms(latency: list[int], q: float) -> str:
    return f"{percentile(latency, q) / 1000:,.0f} ms" if latency else "-"


def format_table(results: dict[str, Any], relays: int, clients: int, n: int) -> str:
    total = relays * clients
    lines = [
        f"scale-out through NATS JetStream: {relays} relays x {clients} client processes x "
        f"{n:,} records ({total * n:,} records per case), against one collector taking all "
        f"{total} clients; a 3-node JetStream cluster on 127.0.0.1 (--stream-replicas "
        f"{REPLICAS}), {os.cpu_count()} CPUs; latency: log_message() to the line in the file, "
        f"a probe line every {PROBE_EVERY_S * 1000:.0f} ms during the load and for "
        f"{IDLE_S:.1f} s after it (idle)",
        "",
        f"{'case':<44}{'records/s':>11}{'vs single':>10}"
        f"{'p50 load':>11}{'p99 load':>11}{'p50 idle':>11}{'p99 idle':>11}",
    ]
    budget, notes = [], []
    for api, case in results.items():
        rates = _rates(case, total, n)
        rows = [
            ("single collector", "single", case["single"]),
            ("scale-out (end to end)", "end to end", case["end to end"]),
            (f"relay tier ({relays} relays)", "relay tier", {}),
            ("writer tier (1 writer)", "writer tier", {}),
        ]
        for label, key, part in rows:
            load, idle = part.get("latency_us", []), part.get("idle_latency_us", [])
            ms = [_ms(samples, q) for samples in (load, idle) for q in (0.5, 0.99)]
            lines.append(
                f"{api + ' ' + label:<44}{rates[key]:>11,.0f}{rates[key] / rates['single']:>10.0%}"
                + "".join(f"{text:>11}" for text in ms)
            )
        lines.append("")
        share = rates["end to end"] / rates["single"]
        met = "met" if share >= BUDGET_FRACTION else "MISSED"
        budget.append(f"{api} {share:.0%} {met}")
        notes += _notes(api, case, total, n, rates, relays)
    lines.append(
        f"budget: end to end >= {BUDGET_FRACTION:.0%} of the single collector's records/s: "
        + "; ".join(budget)
    )
    return "\n".join([*lines, "notes:", *notes])


def _notes(
    api: str, case: dict[str, Any], total: int, n: int, rates: dict[str, float], relays: int
) -> list[str]:
    records = total * n
    single, e2e, tiers = case["single"], case["end to end"], case["tiers"]

    def cpu(costs: dict[str, float]) -> str:
        return ", ".join(f"{who} {s / records * 1e6:.2f}" for who, s in costs.items())

    notes = [
        f"  {api}: single collector {single['on_disk']:,} records in the files in "
        f"{single['seconds']:.2f} s (last close() {single['close_s']:.2f} s); end to end "
        f"{e2e['on_disk']:,} in {e2e['seconds']:.2f} s (last close() {e2e['close_s']:.2f} s); "
        f"relay tier {tiers['relay_s']:.2f} s, writer tier {tiers['writer_s']:.2f} s "
        f"({tiers['on_disk']:,} records)",
        f"  {api}: CPU µs per record: single: {cpu(single['cpu_s'])}; end to end: "
        f"{cpu(e2e['cpu_s'])}; tiers alone: {cpu(tiers['cpu_s'])}",
        f"  {api}: probe lines measured (load/idle/all): single {len(single['latency_us']):,}/"
        f"{len(single['idle_latency_us']):,}/{single['probes']:,}, end to end "
        f"{len(e2e['latency_us']):,}/{len(e2e['idle_latency_us']):,}/{e2e['probes']:,}",
        f"  {api}: per process: one relay {rates['relay tier'] / relays:,.0f} records/s, the "
        f"writer {rates['writer tier']:,.0f} records/s: at 100 records/s per host, one relay "
        f"serves ~{rates['relay tier'] / relays / 100:,.0f} hosts, one writer (one run) "
        f"~{rates['writer tier'] / 100:,.0f}",
    ]
    for name, part in (("end to end", e2e), ("tiers", tiers)):
        notes += [f"  {api} {name}, said on stderr: {line}" for line in part["said"]]
    for name, part in (("single", single), ("end to end", e2e), ("tiers", tiers)):
        notes += [f"  !! {api} {name}: {problem}" for problem in part["problems"]]
    return notes


def problems(results: dict[str, Any]) -> list[str]:
    return [p for case in results.values() for part in case.values() for p in part["problems"]]


def run(relays: int, clients: int, n: int, apis: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for api in apis:
        case = results[api] = {}
        for name, measure in (
            ("single", run_single),
            ("tiers", run_tiers),
            ("end to end", run_end_to_end),
        ):
            progress(f"{api} {name}")
            tmp = tempfile.mkdtemp(prefix="roxxel-bench-scale-out-")
            try:
                case[name] = measure(api, relays, clients, n, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out")
    parser.add_argument("--relays", type=int, default=DEFAULT_RELAYS)
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="per relay")
    parser.add_argument("--records", type=int, help=f"per client (default {DEFAULT_RECORDS:,})")
    parser.add_argument("--kind", choices=("lines", "metrics", "both"), default="both")
    parser.add_argument(
        "--quick", "--smoke", action="store_true", help=f"{QUICK_RECORDS:,} records per client"
    )
    args = parser.parse_args(argv)
    n = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    apis = list(KINDS.values()) if args.kind == "both" else [KINDS[args.kind]]
    results = run(args.relays, args.clients, n, apis)
    print(format_table(results, args.relays, args.clients, n))
    return 1 if problems(results) else 0


if __name__ == "__main__":
    sys.exit(main())
