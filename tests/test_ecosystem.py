"""Python's logging and CLU-style metric writers into a roxxel run."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from roxxel import Handler, Logger, MetricWriter

from .conftest import read, run_python
from .test_multihost import check_pod_log, run_pod


def thread_logger(tmp_path: Path, **options) -> Logger:
    return Logger(tmp_path, "run", collector="thread", watcher=False, **options)


def test_captured_loggers_and_warnings_land_once_with_level_name_and_traceback(
    tmp_path: Path, capfd
) -> None:
    library = logging.getLogger("somelib.sub")
    with thread_logger(tmp_path, capture=("somelib", "py.warnings")) as lg:
        library.warning("disk almost full")
        library.info("below the root's WARNING: not passed on by logging itself")
        try:
            raise ValueError("bad shape")
        except ValueError:
            library.exception("step failed")
        warnings.warn("an old API", UserWarning, stacklevel=1)
        assert lg.flush(30)
        assert not logging.getLogger("somelib").propagate
    log = read(tmp_path / "run_system.log")
    assert "[WARNING] somelib.sub: disk almost full" in log
    assert "below the root" not in log
    assert "[ERROR] somelib.sub: step failed\nTraceback (most recent call last):" in log
    assert "ValueError: bad shape" in log
    assert "[WARNING] py.warnings: " in log and "UserWarning: an old API" in log
    assert "\n\n" not in log
    out, err = capfd.readouterr()
    # The collector echoes each line once; nothing printed a second copy.
    assert out.count("disk almost full") == 1 and "disk almost full" not in err
    assert "an old API" not in err
    # Put back as found.
    assert logging.getLogger("somelib").propagate and not logging.getLogger("somelib").handlers
    assert getattr(warnings.showwarning, "__module__", None) != "logging"


def test_a_handler_on_a_closed_logger_falls_back_to_stderr(tmp_path: Path, capfd) -> None:
    lg = thread_logger(tmp_path)
    handler = Handler(lg)
    lib = logging.getLogger("late")
    lib.addHandler(handler)
    lib.propagate = False
    try:
        lib.warning("before close")
        lg.close()
        lib.warning("after close")
    finally:
        lib.removeHandler(handler)
        lib.propagate = True
    assert "before close" in read(tmp_path / "run_system.log")
    assert "after close" in capfd.readouterr().err


def test_a_record_logged_while_one_is_sent_is_dropped_not_recursed(tmp_path: Path) -> None:
    loop = logging.getLogger("loop")

    class Chatty(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            loop.warning("logged from inside the handler")  # would recurse forever
            return super().format(record)

    with thread_logger(tmp_path, capture="loop") as lg:
        lg._capture.handler.setFormatter(Chatty("%(name)s: %(message)s"))
        loop.warning("the outer record")
    log = read(tmp_path / "run_system.log")
    assert "[WARNING] loop: the outer record" in log
    assert "logged from inside the handler" not in log


def test_capture_takes_logger_names(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="logger names"):
        thread_logger(tmp_path, capture=("jax", 3))


def test_a_jax_warning_of_rank_1_lands_in_rank_0s_log_once(tmp_path: Path) -> None:
    # jax.distributed.initialize warns, on JAX's own logger, about proxy
    # variables; no_proxy is one and harmless on localhost.
    run_pod(
        tmp_path, 3, "--logger-first", "--capture", "jax",
        SLURM_PROCID="{i}", SLURM_NTASKS="3", no_proxy="127.0.0.1",
    )  # fmt: skip
    check_pod_log(tmp_path, 3)
    log = read(tmp_path / "rank0" / "pod_system.log")
    warning = "jax._src.distributed: JAX detected proxy variable(s) in the environment"
    for rank in (1, 2):
        assert log.count(f"[WARNING] [rank {rank}] {warning}") == 1, log
        # Not printed where the rank runs: it went to the collector only.
        assert "JAX detected proxy" not in read(tmp_path / f"worker{rank}.err")
    assert log.count(f"[WARNING] {warning}") == 1
    # Rank 0's output: the collector's echo of the three lines, no other copy.
    assert read(tmp_path / "worker0.err").count("JAX detected proxy") == 3


def test_clu_style_writer_writes_scalars_texts_hparams_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    with thread_logger(tmp_path) as lg:
        writer = MetricWriter(lg)
        writer.write_hparams({"lr": 0.001, "batch_size": 64})
        writer.write_scalars(1, {"loss": 0.5})
        writer.write_scalars(1, {"accuracy": 0.25})  # another set at the same step
        writer.write_texts(2, {"sample": "hello"})
        writer.write_images(2, {"img": object()})
        writer.write_histograms(3, {"w": object()})
        writer.write_images(4, {"img": object()})
        writer.flush()
        writer.close()
    log = read(tmp_path / "run_system.log")
    assert '[INFO] hparams: {"lr": 0.001, "batch_size": 64}' in log
    assert "[INFO] step 2 sample: hello" in log
    assert log.count("write_images is not stored") == 1
    assert log.count("write_histograms is not stored") == 1
    assert read(tmp_path / "run_metrics.csv").splitlines()[1:] == ["1,0.50000,", "1,,0.25000"]


@pytest.mark.parametrize("how", ["handler.flush()", "logging.shutdown()"])
def test_a_handler_flush_and_logging_shutdown_put_what_was_emitted_on_disk(
    tmp_path: Path, how: str
) -> None:
    # CPython's own tests flush handlers before checking a stream; workers
    # flush before os._exit. Nothing closes the Logger here.
    code = f"""
import logging, os
from roxxel import Handler, Logger
lg = Logger({str(tmp_path)!r}, "run", watcher=False)
handler = Handler(lg)
worker = logging.getLogger("worker")
worker.addHandler(handler)
worker.setLevel(logging.INFO)
for i in range(20):
    worker.info("record %d", i)
{how}
os._exit(0)
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    lines = [ln.split("] ", 2)[2] for ln in read(tmp_path / "run_system.log").splitlines()]
    assert lines[:20] == [f"worker: record {i}" for i in range(20)]
    # Then only the collector's own word that the process ended without close().
    assert all("parent process ended" in line for line in lines[20:]), lines[20:]


def test_after_close_only_warnings_reach_the_last_resort_and_none_is_no_error(
    tmp_path: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    lg = thread_logger(tmp_path)
    handler = Handler(lg)
    lib = logging.getLogger("closed")
    lib.addHandler(handler)
    lib.setLevel(logging.DEBUG)
    lib.propagate = False
    try:
        lg.close()
        lib.debug("debug after close")
        lib.info("info after close")
        lib.warning("warning after close")
        handler.flush()  # nothing pending: returns at once
        monkeypatch.setattr(logging, "lastResort", None)
        lib.error("error with no last resort")
    finally:
        lib.removeHandler(handler)
        lib.propagate = True
        lib.setLevel(logging.NOTSET)
    err = capfd.readouterr().err
    assert "warning after close" in err
    assert "debug after close" not in err and "info after close" not in err
    assert "Traceback" not in err and "error with no last resort" not in err
