"""One daemon, many runs: each client's filename_prefix names its run's files.

Real daemon processes (no ``--prefix``), real client processes, a real kill -9.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import zmq

from roxxel import codec
from roxxel.query import CollectorQuery, QueryError

from .conftest import free_port, python_env, read, run_python, wait_for
from .test_delivery import assert_exactly_once, start_clients, wait_all


def log_once(log_dir: Path, prefix: str, endpoint: str, text: str) -> CompletedProcess:
    """A client process of run ``prefix`` logs one WARNING and closes (2 s at most)."""
    result = run_python(
        "import logging\n"
        "from roxxel import Logger\n"
        f"with Logger({str(log_dir)!r}, {prefix!r}, aggregator={endpoint!r}, "
        "close_timeout=2, watcher=False) as lg:\n"
        f"    lg.log_message({text!r}, logging.WARNING)\n",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def rows(path: Path) -> list[int]:
    lines = read(path).splitlines()
    assert lines[0] == "step,i", lines[:2]
    return sorted(int(line.split(",")[0]) for line in lines[1:])


def test_two_runs_through_one_daemon_keep_their_own_files_across_a_kill_9(
    tmp_path: Path, start_daemon
) -> None:
    n, ranks = 2000, 2
    bind = f"tcp://127.0.0.1:{free_port()}"
    log_dir = tmp_path / "logs"
    first = start_daemon(log_dir, None, bind)
    clients = start_clients(first.endpoint, n, ranks, tmp_path, prefix="jobA", tag="jobA")
    clients += start_clients(first.endpoint, n, ranks, tmp_path, prefix="jobB", tag="jobB")
    try:
        wait_for(
            lambda: all(
                (log_dir / f"{p}_system.log").exists()
                and len(read(log_dir / f"{p}_system.log").splitlines()) >= 200
                for p in ("jobA", "jobB")
            ),
            60,
            "both runs writing",
        )
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        at_kill = [len(read(log_dir / f"{p}_system.log").splitlines()) for p in ("jobA", "jobB")]
        second = start_daemon(log_dir, None, bind)
        try:
            results = wait_all(clients)
            assert [code for code, _ in results] == [0] * len(clients), results
            assert second.terminate() == 0
        finally:
            second.kill()
    finally:
        first.kill()
        wait_all(clients, 1)
    assert min(at_kill) < n * ranks, "the kill came after everything was written"
    for prefix in ("jobA", "jobB"):
        log = read(log_dir / f"{prefix}_system.log")
        expected = [
            f"{'[rank 1] ' if r else ''}{prefix}{r} {i}" for r in range(ranks) for i in range(n)
        ]
        assert_exactly_once(log, expected)
        other = "jobB" if prefix == "jobA" else "jobA"
        assert other not in log  # nothing of the other run
        assert rows(log_dir / f"{prefix}_metrics.csv") == list(range(n))
    own = read(log_dir / "roxxel-aggregator_system.log")
    assert "serving run 'jobA'" in own and "serving run 'jobB'" in own
    assert not list(tmp_path.glob("job*-client*/*undelivered*"))


def hello_refusal(endpoint: str, prefix: str) -> codec.Frame:
    sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, sender_id)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    try:
        sock.connect(endpoint)
        sock.send(codec.encode(codec.Hello(sender_id, "h", 0, 1, 1, prefix)))
        return codec.decode(sock.recv())
    finally:
        sock.close()


def test_a_prefix_that_is_not_a_file_name_is_refused_with_a_reason(
    tmp_path: Path, start_daemon
) -> None:
    log_dir = tmp_path / "root" / "logs"
    daemon = start_daemon(log_dir, None)
    for prefix in ("../escape", ".hidden", "a/b", "roxxel-aggregator"):
        reply = hello_refusal(daemon.endpoint, prefix)
        assert isinstance(reply, codec.Refusal), reply
        assert "cannot name a run's files" in reply.body["reason"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["logs"]
    assert not [p for p in log_dir.iterdir() if "escape" in p.name or "hidden" in p.name]
    wait_for(
        lambda: (
            "refused a client of run '../escape'" in read(log_dir / "roxxel-aggregator_system.log")
        ),
        30,
        "the refusal reported",
    )
    with CollectorQuery(daemon.endpoint) as query:
        assert query.ask({"what": "status"}, 30)["runs"] == []


def test_a_client_of_a_run_that_cannot_be_opened_is_told_and_keeps_its_records(
    tmp_path: Path, start_daemon
) -> None:
    log_dir = tmp_path / "logs"
    start_daemon(log_dir, "taken")  # a one-run daemon holds run "taken" in the same dir
    many = start_daemon(log_dir, None)
    result = log_once(tmp_path / "c", "taken", many.endpoint, "kept here")
    assert "refused this client: run 'taken' cannot be opened here" in result.stderr
    assert "another roxxel collector" in result.stderr
    assert list((tmp_path / "c").glob("taken_undelivered_rank0.jsonl"))
    with CollectorQuery(many.endpoint) as query:
        answer = query.ask({"what": "status"}, 30)
    assert answer["stats"]["refused_runs"] >= 1 and answer["runs"] == []


def test_status_and_tail_name_the_run(tmp_path: Path, start_daemon) -> None:
    daemon = start_daemon(tmp_path / "logs", None)
    for prefix, lines in (("alpha", 1), ("beta", 3)):
        result = run_python(
            "from roxxel import Logger\n"
            f"with Logger({str(tmp_path / 'c')!r}, {prefix!r}, aggregator={daemon.endpoint!r}, "
            "watcher=False)"
            " as lg:\n"
            f"    for _ in range({lines}):\n"
            f"        lg.log_message('hello from {prefix}')\n",
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    with CollectorQuery(daemon.endpoint) as query:
        status = query.ask({"what": "status"}, 30)
        assert status["runs"] == ["alpha", "beta"] and status["prefix"] is None
        assert query.ask({"what": "status", "run": "beta"}, 30)["prefix"] == "beta"
        piece = query.ask({"what": "tail", "run": "alpha"}, 30)
        assert "hello from alpha" in piece["text"] and "beta" not in piece["text"]
        with pytest.raises(QueryError, match="serves several runs"):
            query.ask({"what": "tail"}, 30)
    cli = [sys.executable, "-m", "roxxel.cli"]
    tail = subprocess.run(
        [*cli, "tail", daemon.endpoint, "--run", "alpha", "--no-follow"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=60,
    )
    assert tail.returncode == 0 and "hello from alpha" in tail.stdout, tail.stderr
    status = subprocess.run(
        [*cli, "status", daemon.endpoint], capture_output=True, text=True, env=python_env()
    )
    assert "a run per prefix" in status.stdout and "runs open: alpha, beta" in status.stdout
    # A run's status gives its own records, and says which figures are every run's.
    beta = subprocess.run(
        [*cli, "status", daemon.endpoint, "--run", "beta"],
        capture_output=True,
        text=True,
        env=python_env(),
    )
    assert "records of run beta: 3 written" in beta.stdout, beta.stdout
    assert "records (every run): 4 written" in beta.stdout, beta.stdout


def test_a_one_run_daemon_refuses_a_client_of_another_run(tmp_path: Path, start_daemon) -> None:
    daemon = start_daemon(tmp_path / "logs", "jobA")
    result = log_once(tmp_path / "c", "jobB", daemon.endpoint, "from run B")
    assert "refused this client: this collector writes run 'jobA' only" in result.stderr
    assert "use filename_prefix='jobA'" in result.stderr
    # close() says why, and points to a collector that serves the run, not this one.
    (said,) = [ln for ln in result.stderr.splitlines() if "were not delivered" in ln]
    assert f"the collector at {daemon.endpoint} refused them (this collector writes" in said
    assert said.endswith("--aggregator ENDPOINT)")
    (undelivered,) = (tmp_path / "c").glob("jobB_undelivered_rank0.jsonl")
    # Replayed there, it is refused at once, saying why, and the file is kept.
    replayed = subprocess.run(
        [sys.executable, "-m", "roxxel.cli", "replay", str(undelivered)]
        + ["--aggregator", daemon.endpoint],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert replayed.returncode == 1
    assert "refused them: this collector writes run 'jobA' only" in replayed.stderr
    assert "did not acknowledge" not in replayed.stderr and undelivered.exists()
    wait_for(
        lambda: "refused a client of run 'jobB'" in daemon.file("system.log"), 30, "the report"
    )
    assert "from run B" not in daemon.file("system.log")
    assert not list((tmp_path / "logs").glob("jobB*"))
    with CollectorQuery(daemon.endpoint) as query:
        stats = query.ask({"what": "status"}, 30)["stats"]
    # Its batch that came with the hello is the refusal's, not a malformed frame.
    assert stats.get("bad_frames", 0) == 0 and stats["refused_runs"] >= 1, stats


def test_the_runs_open_at_once_fit_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from aggregator.runs import MAX_RUNS, max_runs_for_fds

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert max_runs_for_fds() == (1024 - 256) // 12
    monkeypatch.setattr(resource, "getrlimit", lambda _: (65536, 65536))
    assert max_runs_for_fds() == MAX_RUNS
    monkeypatch.setattr(resource, "getrlimit", lambda _: (100, 100))
    assert max_runs_for_fds() == 1


def test_a_run_with_a_broken_checkpoint_is_refused_and_the_daemon_serves_on(
    tmp_path: Path, start_daemon
) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / ".broken_checkpoint.json").write_text('{"version": 1, "senders": {"zz": {}}}')
    daemon = start_daemon(log_dir, None)
    reply = hello_refusal(daemon.endpoint, "broken")
    assert isinstance(reply, codec.Refusal), reply
    assert "run 'broken' cannot be opened here" in reply.body["reason"]
    log_once(tmp_path / "c", "fine", daemon.endpoint, "still served")
    assert "still served" in read(log_dir / "fine_system.log")


def test_a_run_whose_senders_died_is_closed_and_reopened_by_a_returning_sender(
    tmp_path: Path,
) -> None:
    from aggregator import Collector

    collector = Collector.for_runs("tcp://127.0.0.1:0", str(tmp_path / "logs"))
    collector.runs.idle_seconds = 0.0
    serving = threading.Thread(target=collector.run, kwargs={"poll": 0.02})
    serving.start()
    sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, sender_id)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)

    def send(frame: codec.Frame) -> int:
        sock.send(codec.encode(frame))
        reply = codec.decode(sock.recv())
        assert isinstance(reply, codec.Ack), reply
        return reply.seq

    try:
        sock.connect(collector.endpoint)
        hello = codec.Hello(sender_id, "h", 1, 7, 2, "p")
        assert send(hello) == 0
        # Its process died (as a watcher says): the run has no open sender left.
        died = [["l", 1.0, 20, "before"], ["x", 2.0, 50, "process 7 was killed"]]
        assert send(codec.Batch(sender_id, 1, died)) == 1
        wait_for(lambda: "p" not in collector.runs.by_prefix, 30, "the run closed")
        # The same sender id comes back (a replay): the run opens from its checkpoint.
        assert send(hello) == 1
        assert send(codec.Batch(sender_id, 1, [["l", 3.0, 20, "twice?"]])) == 1  # duplicate
        assert send(codec.Batch(sender_id, 2, [["l", 4.0, 20, "after"]])) == 2
    finally:
        sock.close()
        collector.stop()
        serving.join(30)
        collector.close()
    log = read(tmp_path / "logs" / "p_system.log")
    assert [ln.split("] ", 2)[2] for ln in log.splitlines()] == [
        "[rank 1] process 7 was killed",  # a notice goes before its batch's lines
        "[rank 1] before",
        "[rank 1] after",
    ]


def test_each_client_is_told_its_own_runs_files_and_a_run_again_is_marked(
    tmp_path: Path, start_daemon
) -> None:
    log_dir = tmp_path / "logs"
    daemon = start_daemon(log_dir, None, f"tcp://127.0.0.1:{free_port()}")
    said = {}
    for prefix, text in (("jobA", "first"), ("jobB", "other"), ("jobA", "second")):
        said[prefix] = log_once(tmp_path / "c", prefix, daemon.endpoint, text).stderr
        files = f"{log_dir.resolve()}/{prefix}_*.{{log,csv,jsonl}}"
        line = f"roxxel: logging to {daemon.endpoint} → {files} on {socket.gethostname()}"
        assert said[prefix].splitlines() == [line]
    first, marker, second = read(log_dir / "jobA_system.log").splitlines()
    assert first.endswith("] [WARNING] first") and second.endswith("] [WARNING] second")
    assert "] [INFO] roxxel " in marker and ": a new run of jobA starts here: rank 0 on " in marker
    # A run's first start leaves its file as the original roxxel wrote it.
    assert read(log_dir / "jobB_system.log").splitlines()[0].endswith("] [WARNING] other")
    assert len(read(log_dir / "jobB_system.log").splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_a_rank_0_that_joins_after_the_others_wrote_does_not_mark_a_new_run(
    tmp_path: Path, start_daemon
) -> None:
    daemon = start_daemon(tmp_path / "logs", "late", f"tcp://127.0.0.1:{free_port()}")
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.endpoint)
        for rank in (1, 0):  # rank 1's lines are in the file before rank 0 says hello
            sid = secrets.token_bytes(16)
            hello = codec.Hello(sid, "h", rank, 10 + rank, 2, "late", version="x", starts=True)
            sock.send(codec.encode(hello))
            sock.send(codec.encode(codec.Batch(sid, 1, [["l", 1e9, 30, f"from {rank}"]])))
            wait_for(lambda sid=sid: _acked(sock, sid, 1), 30, f"rank {rank}'s batch")
    log = read(tmp_path / "logs" / "late_system.log")
    assert "a new run of" not in log, log
    assert [line.split("] ", 2)[2] for line in log.splitlines()] == ["[rank 1] from 1", "from 0"]


def _acked(sock: zmq.Socket, sid: bytes, seq: int) -> bool:
    while sock.poll(50):
        frame = codec.decode(sock.recv())
        if isinstance(frame, codec.Ack) and frame.sender_id == sid and frame.seq >= seq:
            return True
    return False
