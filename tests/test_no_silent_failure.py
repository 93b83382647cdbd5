"""No silent failure: a bad endpoint fails at once in one line, a collector that does
not answer is said at once (and again when it answers), and what could not be
delivered is readable text that still replays exactly once. Real sockets, a real daemon."""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from roxxel import Logger, codec
from roxxel.cli import main
from roxxel.route import ENV_AGGREGATOR
from roxxel.undelivered import read_unsent, write_unsent
from roxxel.unsent import Unsent, UnsentBatch

from .conftest import Said, free_port, run_python, wait_for
from .test_delivery import messages, roxxel_replay

NO_HOST = "no-such-host.invalid"


def resolver_answers() -> bool:
    """Whether the resolver says 'no such name' for NO_HOST (not 'try again': no DNS here)."""
    try:
        socket.getaddrinfo(NO_HOST, 5555)
    except socket.gaierror as exc:
        return exc.errno != socket.EAI_AGAIN
    return False


BAD_ENDPOINTS = [
    (
        "localhost:5555",
        "'localhost:5555' is not a ZeroMQ endpoint: did you mean tcp://localhost:5555?",
    ),
    (
        "tcp://127.0.0.1:99999",
        "'tcp://127.0.0.1:99999': the port 99999 is out of range (1 to 65535)",
    ),
    ("tcp://127.0.0.1:http", "the port 'http' is not a number"),
    ("udp://127.0.0.1:5555", "roxxel connects over tcp://, ipc:// or inproc://, not udp://"),
    ("tcp://*:5555", "'*' is for binding"),
]


@pytest.mark.parametrize(("endpoint", "said"), BAD_ENDPOINTS)
def test_a_bad_endpoint_fails_at_logger_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, said: str
) -> None:
    with pytest.raises(ValueError) as raised:
        Logger(tmp_path, "run", aggregator=endpoint, watcher=False)
    message = str(raised.value)
    assert message.startswith(f"aggregator={endpoint!r}") and said in message, message
    assert "\n" not in message
    monkeypatch.setenv(ENV_AGGREGATOR, endpoint)
    with pytest.raises(ValueError, match=f"^{ENV_AGGREGATOR}="):
        Logger(tmp_path, "run", watcher=False)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


@pytest.mark.skipif(not resolver_answers(), reason="no resolver to say the name does not exist")
def test_a_host_that_does_not_resolve_fails_at_logger_not_silently_all_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"the host '{NO_HOST}' does not resolve"):
        Logger(tmp_path, "run", aggregator=f"tcp://{NO_HOST}:5555", watcher=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "localhost:5555"],
        ["status", "localhost:5555"],
        ["tail", "localhost:5555"],
        ["replay", "file.jsonl", "--aggregator", "localhost:5555"],
    ],
)
def test_the_cli_says_a_bad_endpoint_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "roxxel: 'localhost:5555' is not a ZeroMQ endpoint: did you mean tcp://localhost:5555?\n"
    )


def test_the_cli_says_a_directory_without_a_running_collector_and_a_port_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"roxxel status: no collector of a run in {tmp_path} is running: ")
    assert err.count("\n") == 1
    assert main(["check", "tcp://127.0.0.1:99999"]) == 2
    assert "the port 99999 is out of range" in capsys.readouterr().err
    if resolver_answers():
        assert main(["status", f"tcp://{NO_HOST}:5555"]) == 2
        assert "does not resolve" in capsys.readouterr().err


@pytest.fixture
def said() -> Iterator[Said]:
    handler = Said()
    diag = logging.getLogger("roxxel.client")
    diag.addHandler(handler)
    try:
        yield handler
    finally:
        diag.removeHandler(handler)


def test_a_collector_that_does_not_answer_is_said_once_then_its_answer(
    tmp_path: Path, start_daemon, said: Said
) -> None:
    port = free_port()  # nothing listens there yet
    endpoint = f"tcp://127.0.0.1:{port}"
    logger = Logger(
        tmp_path / "client", "run", aggregator=endpoint, no_answer_warning=0.2, watcher=False
    )
    try:
        for i in range(100):
            logger.log_message(f"line {i}")
        wait_for(lambda: said.having("has answered"), 30, "the no-answer warning")
        (warning,) = said.having("has answered")
        assert warning.startswith(f"roxxel: no collector at {endpoint} has answered for 0.")
        assert "up to max_buffer_bytes=256 MiB" in warning
        assert str(tmp_path / "client" / "run_undelivered_rank0.jsonl") in warning
        daemon = start_daemon(tmp_path / "logs", "run", endpoint)
        wait_for(lambda: said.having("answers now"), 60, "the answer to be said")
        assert logger.flush(60)
        for i in range(100, 200):
            logger.log_message(f"line {i}")
        logger.close()
        assert daemon.terminate() == 0
    finally:
        logger.close()
    (answer,) = said.having("answers now")
    assert answer.startswith(f"roxxel: the collector at {endpoint} answers now (after ")
    assert answer.endswith("; 100 record(s) delivered")
    assert len(said.having("has answered")) == 1  # said once
    assert messages(daemon.file("system.log")) == [f"line {i}" for i in range(200)]
    assert not (tmp_path / "client").exists()  # everything delivered


def test_a_collector_that_answers_at_once_says_where_the_files_are_and_nothing_else(
    tmp_path: Path, daemon, said: Said
) -> None:
    with Logger(
        tmp_path / "ignored", "run", aggregator=daemon.endpoint, no_answer_warning=0.05
    ) as logger:
        logger.log_message("hello")
        assert logger.flush(30)
        # The daemon's files, on its host: never a path under log_dir that nobody writes.
        files = daemon.log_dir.resolve() / "run"
        assert logger.sys_log_path == f"{files}_system.log"
        assert logger.metrics_csv_path == f"{files}_metrics.csv"
        assert logger.metrics_jsonl_path == f"{files}_metrics.jsonl"
        assert logger.collector_host == socket.gethostname()
    assert said.messages == [
        f"roxxel: logging to {daemon.endpoint} → {files}_*.{{log,csv,jsonl}} on "
        f"{socket.gethostname()}"
    ]
    assert not (tmp_path / "ignored").exists()


def test_a_rank_other_than_0_does_not_say_where(tmp_path: Path, daemon) -> None:
    code = f"""
import roxxel
with roxxel.Logger({str(tmp_path)!r}, "run", aggregator={daemon.endpoint!r}) as log:
    log.log_message("from rank 1", level=30)
    assert log.flush(30)
    assert log.sys_log_path.endswith("/run_system.log"), log.sys_log_path
"""
    done = run_python(code, RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", ROXXEL_WATCHER="0")
    assert done.returncode == 0, done.stderr
    assert "logging to" not in done.stderr
    with pytest.raises(ValueError, match="no_answer_warning must be > 0 seconds or None"):
        Logger(tmp_path, "run", aggregator=daemon.endpoint, no_answer_warning=0)


def test_the_undelivered_file_is_readable_json_lines_and_replays_exactly_once(
    tmp_path: Path, start_daemon, said: Said
) -> None:
    port = free_port()
    client_dir = tmp_path / "client"
    logger = Logger(
        client_dir,
        "run",
        aggregator=f"tcp://127.0.0.1:{port}",
        close_timeout=0.2,
        no_answer_warning=None,
        watcher=False,
    )
    logger.log_message("lost ünïcode line", level=logging.WARNING)
    logger.log_message("custom level", level=25)
    for step in range(3):
        logger.log_metrics_summary(step, {"loss": 1.5 / (step + 1), "nan": float("nan")})
    logger.log_metrics_summary(3, {"loss": "nan", "big": 2**64 - 1})
    # Nobody answered: where the files will be is not known, and not guessed.
    assert logger.sys_log_path is None and logger.collector_host is None
    logger.close()
    path = client_dir / "run_undelivered_rank0.jsonl"
    assert path.stat().st_mode & 0o777 == 0o600  # it names the sender id: private
    # The hint names the daemon the records belong to.
    (hint,) = said.having("deliver them with")
    assert hint.endswith(f"roxxel replay {path} --aggregator tcp://127.0.0.1:{port})")
    text = path.read_text(encoding="utf-8")
    header, *records = [json.loads(line) for line in text.splitlines()]
    assert header["roxxel_undelivered"] == 2 and header["prefix"] == "run"
    assert f"roxxel replay {path}" in header["replay"]
    # Lines and metrics rows are batched apart: each kind in the order logged.
    lines = [(r["level"], r["text"], "exact" in r) for r in records if "text" in r]
    assert lines == [
        ("WARNING", "lost ünïcode line", False),
        ("Level 25", "custom level", False),
    ]
    rows = [(r["step"], r["metrics"], "exact" in r) for r in records if "metrics" in r]
    # What JSON cannot say exactly (a NaN, a text that reads "nan") is also kept exactly.
    assert rows == [
        (0, {"loss": 1.5, "nan": "nan"}, True),
        (1, {"loss": 0.75, "nan": "nan"}, True),
        (2, {"loss": 0.5, "nan": "nan"}, True),
        (3, {"loss": "nan", "big": 2**64 - 1}, True),
    ]
    assert all("seq" in r and "batch" in r and "ts" in r for r in records)

    daemon = start_daemon(tmp_path / "logs", "run", f"tcp://127.0.0.1:{port}")
    try:
        first = roxxel_replay(path, daemon.endpoint)
        assert first.returncode == 0, first.stderr
        assert "delivered 6 record(s)" in first.stdout
        again = roxxel_replay(Path(f"{path}.replayed"), daemon.endpoint)
        assert again.returncode == 0, again.stderr
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert messages(daemon.file("system.log")) == [
        "lost ünïcode line",
        "custom level",
    ]
    assert daemon.file("metrics.csv").splitlines() == [
        "step,loss,nan,big",
        "0,1.50000,nan,",
        "1,0.75000,nan,",
        "2,0.50000,nan,",
        f"3,nan,,{2**64 - 1}",
    ]


def test_every_batch_reads_back_as_the_bytes_it_was_written_from(tmp_path: Path) -> None:
    hello = codec.Hello(bytes(range(16)), "host", 3, 1, 4, "run", acked=2)
    records = [
        ["l", 1.5, 20, "plain, and a \u2028 some readers take for a line break"],
        ["m", ["a", "b"], [1.0, 2.0], [1, 2], [[1.0, "nan"], [float("-inf"), b"\x00\x01"]]],
        ["r", ["a"], [1.0], [5], [[-0.0]]],
        ["m", ["b"], [1.0], [6], [[True]]],
        ["d", 3.0, 4, 5],
        ["x", 3.0, 50, "a death notice: carried as it is"],
    ]
    batches = [
        UnsentBatch(3, codec.encode_records(records), 4, 2),
        UnsentBatch(4, codec.encode_records([]), 0, 0),
        UnsentBatch(None, codec.encode_records([["l", 1.0, 10, "pending"]]), 0, 1),
    ]
    path = tmp_path / "u.jsonl"
    write_unsent(str(path), Unsent(hello, batches))
    write_unsent(str(path), Unsent(hello, batches[2:]))
    assert "\u2028" not in path.read_text(encoding="utf-8")  # escaped
    first, second = read_unsent(str(path))
    assert (first.hello, first.batches) == (hello, batches)
    assert (second.hello, second.batches) == (hello, batches[2:])


def test_a_file_of_the_first_format_still_replays_as_written(tmp_path: Path) -> None:
    import base64

    body = codec.encode_records([["l", 1.0, 20, "old"]])
    path = tmp_path / "old.jsonl"
    header = {
        "roxxel_undelivered": 1,
        "sender_id": bytes(16).hex(),
        "host": "h",
        "rank": 0,
        "pid": 1,
        "process_count": 1,
        "prefix": "run",
        "acked": 0,
    }
    batch = {"seq": 1, "metrics": 0, "lines": 1, "msgpack": base64.b64encode(body).decode()}
    path.write_text(json.dumps(header) + "\n" + json.dumps(batch) + "\n", encoding="utf-8")
    (section,) = read_unsent(str(path))
    assert section.batches == [UnsentBatch(1, body, 0, 1)]


def test_an_undelivered_line_dated_out_of_range_stays_json_and_exact(tmp_path: Path) -> None:
    # Logger.log_record takes any time: the collector redates it, the file keeps it.
    records = [["l", math.nan, 20, "dated nan"], ["l", 1.7e9, 20, "dated well"]]
    hello = codec.Hello(b"s" * codec.SENDER_ID_LEN, "h", 0, 1, 1, "run")
    unsent = Unsent(hello, [UnsentBatch(3, codec.encode_records(records), 0, 2)])
    path = str(tmp_path / "run_undelivered_rank0.jsonl")
    write_unsent(path, unsent)
    with open(path, encoding="utf-8") as f:
        assert all(json.loads(line) for line in f)  # NaN is not JSON: the record goes whole
    (section,) = read_unsent(path)
    frame = codec.decode(codec.batch_frame(hello.sender_id, 3, section.batches[0].body))
    assert repr(frame.records) == repr(records)  # NaN != NaN: compared as written
