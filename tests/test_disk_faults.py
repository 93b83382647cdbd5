"""Disk faults: a full or read-only log directory stops nothing and loses nothing.

While writing fails the collector acknowledges nothing (the clients keep
their records), says why on stderr, rewinds the files to its last checkpoint
and writes everything once when the disk can take it again. The real faults
are a small tmpfs, mounted in a mount namespace of the daemon's own (filled
up, or remounted read-only, then given back); a sink raising ``ENOSPC``
checks the same in one process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from aggregator import Collector
from aggregator.collector import default_sinks
from aggregator.sinks import Origin, Sink
from roxxel import Logger
from roxxel.lines import parse_line
from roxxel.security import generate_keys

from .conftest import python_env, read, wait_for

# The message of each numbered line (an untagged INFO record).
MESSAGE = re.compile(r"line (\d+) x{120}")


def check_once(log: str, count: int) -> None:
    """Every line 0..count-1 exactly once, none torn, nothing else but the collector's own."""
    ours = [ln for ln in log.splitlines() if "roxxel-aggregator" not in ln]
    numbers = Counter()
    for ln in ours:
        head = parse_line(ln)
        match = head and head.level == "INFO" and head.rank is None and MESSAGE.fullmatch(head.text)
        assert match, f"a torn or foreign line: {ln!r}"
        numbers[int(match.group(1))] += 1
    assert sorted(numbers) == list(range(count)), "lines lost"
    assert set(numbers.values()) == {1}, "lines written twice"


@contextlib.contextmanager
def collector_and_client(tmp_path: Path, sinks: Sink) -> Iterator[tuple[Collector, Logger]]:
    """A collector over ``sinks`` on a thread, and a Logger sending to it."""
    collector = Collector(
        "tcp://127.0.0.1:0", sinks, checkpoint=str(tmp_path / ".run_checkpoint.json")
    )
    serving = threading.Thread(target=collector.run, daemon=True)
    serving.start()
    try:
        with Logger(tmp_path / "client", "run", aggregator=collector.endpoint, watcher=False) as lg:
            yield collector, lg
    finally:
        collector.stop()
        serving.join(30)
        collector.close()


class FullDisk(Sink):
    """The run's sinks, failing with ENOSPC while ``full`` is set."""

    def __init__(self, inner: Sink):
        self.inner = inner
        self.full = threading.Event()

    def _check(self) -> None:
        if self.full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")

    def write_lines(self, origin: Origin, records: Sequence[Any]) -> None:
        self._check()
        self.inner.write_lines(origin, records)

    def write_metrics(self, origin: Origin, runs: Sequence[Any]) -> None:
        self._check()
        self.inner.write_metrics(origin, runs)

    def flush(self) -> None:
        self._check()
        self.inner.flush()

    def sync(self) -> None:
        self._check()
        self.inner.sync()

    def mark(self) -> Any:
        return self.inner.mark()

    def rewind(self, mark: Any) -> None:
        self.inner.rewind(mark)

    def close(self) -> None:
        self.inner.close()


def test_a_sink_raising_enospc_keeps_records_unacknowledged_until_it_recovers(
    tmp_path: Path, capfd
) -> None:
    sinks = FullDisk(default_sinks(str(tmp_path), "run", None))
    with collector_and_client(tmp_path, sinks) as (collector, lg):
        for i in range(100):
            lg.log_message(f"line {i} " + "x" * 120)
        assert lg.flush(30)
        sinks.full.set()
        for i in range(100, 300):
            lg.log_message(f"line {i} " + "x" * 120)
        wait_for(lambda: collector.stats["write_errors"] > 0, what="a write error")
        assert not lg.flush(0.3), "acknowledged while the disk was full"
        sinks.full.clear()
        assert lg.flush(60), "not written after the disk recovered"
    err = capfd.readouterr().err
    assert "writing failed ([Errno 28] No space left on device)" in err
    assert "it works again" in err
    check_once(read(tmp_path / "run_system.log"), 300)
    assert not (tmp_path / "client").exists()  # nothing undelivered


# -- real faults: a tmpfs in a mount namespace of the daemon's own, a directory's mode ----

# Without these a root daemon would write into a directory of mode 0555 anyway.
_DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _cannot(*argv: str) -> str | None:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} (util-linux) is not installed"
    probe = subprocess.run(list(argv), capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`{' '.join(argv)}` fails here: {probe.stderr.strip()}"
    return None


def _cannot_mount_tmpfs() -> str | None:
    return _cannot(
        "unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"
    ) or _cannot("nsenter", "--version")


class FaultyDaemon:
    """roxxel-aggregator started through ``wrapper`` (which ends by exec'ing it)."""

    def __init__(self, tmp_path: Path, wrapper: list[str], extra: Sequence[str] = ()):
        self.log_dir = tmp_path / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.out, self.err = tmp_path / "daemon.out", tmp_path / "daemon.err"
        argv = [
            sys.executable, "-m", "aggregator", "--bind", "tcp://127.0.0.1:0",
            "--log-dir", str(self.log_dir), "--prefix", "run", "--no-echo", *extra,
        ]  # fmt: skip
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [*wrapper, *argv], env=python_env(), stdout=out, stderr=err
            )
        ready = wait_for(
            lambda: self.process.poll() is not None or " ready on " in read(self.out),
            what="the daemon's ready line",
        )
        assert ready is True and self.process.poll() is None, read(self.err)
        self.endpoint = read(self.out).split(" ready on ", 1)[1].split()[0]

    def path(self, name: str) -> Path:
        # A tmpfs of its own is visible only in its namespace, and through its root.
        return Path(f"/proc/{self.process.pid}/root") / str(self.log_dir).lstrip("/") / name

    def remount(self, options: str) -> None:
        subprocess.run(
            ["nsenter", "-t", str(self.process.pid), "-m",
             "mount", "-o", f"remount,{options}", str(self.log_dir)],
            check=True,
        )  # fmt: skip

    def terminate(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def tmpfs_wrapper(log_dir: Path, size: str) -> list[str]:
    script = f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(log_dir)]


@pytest.fixture
def faulty_daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[FaultyDaemon] = []

    def start(fault: str, extra: Sequence[str] = ()) -> FaultyDaemon:
        why = _cannot_mount_tmpfs() if fault == "full" else _cannot(*_DROP_DAC, "true")
        if why is not None:
            pytest.skip(why)
        # 256 KiB: room for the first few hundred lines and rows, not for 3,000.
        wrapper = tmpfs_wrapper(tmp_path / "logs", "256k") if fault == "full" else _DROP_DAC
        started.append(FaultyDaemon(tmp_path, wrapper, extra))
        return started[-1]

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()


LOG_LINES = (
    "import sys\n"
    "from roxxel import Logger\n"
    "lg = Logger(sys.argv[1], 'run', aggregator=sys.argv[2], close_timeout=120)\n"
    "for i in range(int(sys.argv[3]), int(sys.argv[4])):\n"
    "    lg.log_message(f'line {i} ' + 'x' * 120)\n"
    "    lg.log_metrics_summary(i, {'loss': i / 7})\n"
    "assert lg.flush(120)\n"
    "lg.close()\n"
)


def log_lines(tmp_path: Path, endpoint: str, first: int, end: int, output: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LOG_LINES, str(tmp_path / "c"), endpoint, str(first), str(end)],
        env=python_env(),
        stdout=output,
        stderr=output,
    )


@pytest.mark.parametrize("fault", ["full", "unwritable"])
def test_a_full_or_unwritable_log_dir_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path, faulty_daemon, fault: str
) -> None:
    daemon = faulty_daemon(fault)
    count, first = 3000, 0
    client_err = tmp_path / "client.err"
    journal = daemon.path(".run_checkpoint.journal")
    if fault == "unwritable":
        # The files are open; the checkpoint's journal, opened at every commit,
        # and a new snapshot of it cannot be.
        with open(client_err, "w") as err:
            assert log_lines(tmp_path, daemon.endpoint, 0, 500, err).wait(120) == 0
        first = 500
        daemon.log_dir.chmod(0o555)
        journal.chmod(0o400)
    with open(client_err, "a") as err:
        client = log_lines(tmp_path, daemon.endpoint, first, count, err)
    try:
        expected = "No space left on device" if fault == "full" else "Permission denied"
        wait_for(lambda: expected in read(daemon.err), what=f"the daemon reporting {expected}")
        assert client.poll() is None, "the client ended while nothing could be written"
        if fault == "full":
            daemon.remount("size=16m")
        else:
            daemon.log_dir.chmod(0o755)
            journal.chmod(0o600)
        assert client.wait(150) == 0, read(client_err)
    finally:
        daemon.log_dir.chmod(0o755)
        if journal.exists():
            journal.chmod(0o600)
        if client.poll() is None:
            client.kill()
            client.wait()
    err = read(daemon.err)
    assert err.count("writing failed (") == 1 and "stay unacknowledged" in err, err
    assert (
        "it works again" in err and "nothing is lost" in daemon.path("run_system.log").read_text()
    )
    check_once(daemon.path("run_system.log").read_text(), count)
    csv_rows = daemon.path("run_metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "step,loss"
    assert [int(row.split(",")[0]) for row in csv_rows[1:]] == list(range(count))
    assert not (tmp_path / "c").exists(), "the client kept records it could not deliver"
    assert daemon.terminate() == 0


def test_a_daemon_on_an_unwritable_log_dir_says_so_and_exits(tmp_path: Path) -> None:
    why = _cannot(*_DROP_DAC, "true")
    if why is not None:
        pytest.skip(why)
    log_dir = tmp_path / "logs"
    log_dir.mkdir(mode=0o555)
    result = subprocess.run(
        [*_DROP_DAC, sys.executable, "-m", "aggregator", "--bind", "tcp://127.0.0.1:0",
         "--log-dir", str(log_dir)],
        env=python_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot serve {log_dir}" in result.stderr and "Permission denied" in result.stderr


def test_a_reopen_that_fails_keeps_the_old_file_and_the_collector_serving(
    tmp_path: Path, capfd, monkeypatch
) -> None:
    sinks = default_sinks(str(tmp_path), "run", None)
    with collector_and_client(tmp_path, sinks) as (collector, lg):
        lg.log_message("line 0 " + "x" * 120)
        lg.log_metrics_summary(0, {"loss": 1.0})
        assert lg.flush(30)
        # logrotate moved the files; the CSV cannot be created again (yet).
        for name in ("run_system.log", "run_metrics.csv"):
            (tmp_path / name).rename(tmp_path / f"{name}.1")
        csv_sink = sinks.sinks[1]

        def refuse() -> None:
            raise PermissionError(13, "Permission denied", csv_sink.path)

        monkeypatch.setattr(csv_sink, "_open", refuse)
        collector.reopen()
        wait_for(lambda: (tmp_path / "run_system.log").exists(), what="the new system log")
        lg.log_message("line 1 " + "x" * 120)
        lg.log_metrics_summary(1, {"loss": 0.5})
        assert lg.flush(30), "the collector stopped acknowledging"
    assert "reopening the files failed: [Errno 13] Permission denied" in capfd.readouterr().err
    check_once(read(tmp_path / "run_system.log.1") + read(tmp_path / "run_system.log"), 2)
    # The CSV sink kept its old (moved) file: both rows are there, once.
    assert read(tmp_path / "run_metrics.csv.1").splitlines() == [
        "step,loss",
        "0,1.00000",
        "1,0.50000",
    ]


def test_refused_connections_while_the_disk_is_full_do_not_stop_a_curve_daemon(
    tmp_path: Path, faulty_daemon
) -> None:
    keys = tmp_path / "keys"
    generate_keys(str(keys), "server")
    generate_keys(str(keys / "clients"), "rank0")
    daemon = faulty_daemon(
        "full",
        (
            "--curve-secret",
            str(keys / "server.key_secret"),
            "--curve-clients",
            str(keys / "clients"),
        ),
    )
    # Fill the log directory's tmpfs to the last byte.
    filler = os.open(daemon.path("filler"), os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(filler, b"\0" * 4096)
    finally:
        os.close(filler)
    server = zmq.auth.load_certificate(str(keys / "server.key"))[0]
    context = zmq.Context()
    sockets = []
    try:
        for _ in range(50):  # each a refused key, each reported: no room for it
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.curve_serverkey = server
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.connect(daemon.endpoint)
            sockets.append(sock)
        wait_for(lambda: "No space left on device" in read(daemon.err), what="the write error")
        assert daemon.process.poll() is None, read(daemon.err)
        daemon.path("filler").unlink()  # room again
        wait_for(lambda: "it works again" in read(daemon.err), what="writing again")
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    assert daemon.process.poll() is None, read(daemon.err)
    assert "refused CURVE key" in daemon.path("run_system.log").read_text()
    assert daemon.terminate() == 0
