"""roxxel.Handler against what CPython's own ``Lib/test/test_logging.py`` expects of a handler.

The cases follow that suite's filter, level, handler, formatter, adapter,
``QueueHandler``/``QueueListener``, ``MemoryHandler``, ``dictConfig``,
shutdown and last-resort tests, rewritten for a handler whose output is a
run's system log: each case logs through a real Logger (its collector a
thread of the test process) and reads the file back. What would leave
global logging state behind (atexit, ``dictConfig``, interpreter exit) runs
in a child interpreter.

Where roxxel differs from a standard handler on purpose, the test asserts
roxxel's behaviour and carries ``@differs_on_purpose(words)``: the README
must say ``words`` (checked by the last test).
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import queue
import re
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from roxxel import Handler, Logger

from .conftest import Said, differs_on_purpose, read, run_python, unstated_differences


class Entry(NamedTuple):
    stamp: str
    level: str
    text: str  # a traceback or stack below the line included


_LINE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \[([^\]]*)\] (.*)")


def entries(log: str) -> list[Entry]:
    """The system log's records, each with the lines that follow it unprefixed."""
    out: list[Entry] = []
    for line in log.splitlines():
        match = _LINE.fullmatch(line)
        if match:
            out.append(Entry(*match.groups()))
        else:
            out[-1] = out[-1]._replace(text=f"{out[-1].text}\n{line}")
    return out


_names = itertools.count()


@dataclass
class Run:
    """A Logger, a Handler on it, and a fresh ``logging`` logger carrying the handler."""

    logger: Logger
    handler: Handler
    log: logging.Logger
    path: Path
    _touched: list[logging.Logger] = field(default_factory=list)

    def child(self, suffix: str) -> logging.Logger:
        """A logger below :attr:`log`, put back as found after the test."""
        child = logging.getLogger(f"{self.log.name}.{suffix}")
        self._touched.append(child)
        return child

    def alone(self) -> None:
        """Only this test's handlers on :attr:`log`: pytest (9) gives every
        non-propagating logger its capture handler when a test starts, and
        that handler raises on a logging error and counts as another handler."""
        for other in self.log.handlers[:]:
            if other is not self.handler:
                self.log.removeHandler(other)

    def entries(self) -> list[Entry]:
        """What is in the run's system log once everything emitted is there."""
        assert self.logger.flush(30)
        return entries(read(self.path))

    def texts(self) -> list[str]:
        return [e.text for e in self.entries()]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    # DEBUG, so that what is tested is the handler's and the logger's levels.
    lg = Logger(tmp_path, "run", collector="thread", watcher=False, level=logging.DEBUG)
    log = logging.getLogger(f"conventions{next(_names)}")
    handler = Handler(lg)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    state = Run(lg, handler, log, tmp_path / "run_system.log", [log])
    try:
        yield state
    finally:
        lg.close()
        for touched in state._touched:
            for h in touched.handlers[:]:
                touched.removeHandler(h)
            touched.filters.clear()
            touched.setLevel(logging.NOTSET)
            touched.propagate = True


def in_child(tmp_path: Path, body: str) -> tuple[list[Entry], str]:
    """Run ``body`` with ``lg`` (a Logger of ``tmp_path``) in a fresh
    interpreter that ends normally; the run's records and the child's stderr."""
    code = f"""
import atexit, logging, logging.config, logging.handlers, sys
from roxxel import Handler, Logger
LOG_DIR = {str(tmp_path)!r}
{body}
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    return entries(read(tmp_path / "run_system.log")), done.stderr


# --- levels (BuiltinLevelsTest, CustomLevelsAndFiltersTest) -----------------


def log_every_level(log: logging.Logger) -> None:
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        log.log(level, "at %s", logging.getLevelName(level))


def test_the_handlers_level_drops_what_is_below_it(run: Run) -> None:
    run.handler.setLevel(logging.WARNING)
    log_every_level(run.log)
    name = run.log.name
    assert [(e.level, e.text) for e in run.entries()] == [
        ("WARNING", f"{name}: at WARNING"),
        ("ERROR", f"{name}: at ERROR"),
        ("CRITICAL", f"{name}: at CRITICAL"),
    ]


def test_the_loggers_level_drops_records_before_the_handler_sees_them(run: Run) -> None:
    run.log.setLevel("ERROR")
    log_every_level(run.log)
    # A child without a level of its own takes its parent's.
    run.child("sub").warning("below the inherited level")
    run.child("sub").error("at the inherited level")
    assert [e.level for e in run.entries()] == ["ERROR", "CRITICAL", "ERROR"]


def test_custom_levels_order_like_numbers_and_keep_their_names(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registered names are process-wide: restored after the test.
    monkeypatch.setattr(logging, "_levelToName", dict(logging._levelToName))
    monkeypatch.setattr(logging, "_nameToLevel", dict(logging._nameToLevel))
    levels = {113: "Murmur", 116: "Remark", 118: "Shout"}
    for number, name in levels.items():
        logging.addLevelName(number, name)
    run.handler.setLevel(116)
    for number in levels:
        run.log.log(number, "level %d", number)
    assert [(e.level, e.text.split(": ")[1]) for e in run.entries()] == [
        ("Remark", "level 116"),
        ("Shout", "level 118"),
    ]


@differs_on_purpose("Logger's own `level` (INFO by default) still applies")
def test_the_roxxel_loggers_own_level_applies_after_the_handlers(tmp_path: Path) -> None:
    # The Logger's level is the run's threshold for every line, whatever
    # logging let through; on other ranks forward_level raises it.
    with Logger(tmp_path, "run", collector="thread", watcher=False) as lg:
        handler = Handler(lg, logging.DEBUG)
        log = logging.getLogger("conventions.default_level")
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        try:
            log.debug("passed by logging, below the Logger's INFO")
            log.info("at the Logger's level")
            assert lg.flush(30)
        finally:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)
            log.propagate = True
    assert [e.text for e in entries(read(tmp_path / "run_system.log"))] == [
        "conventions.default_level: at the Logger's level"
    ]


# --- filters (BasicFilterTest) ----------------------------------------------


def log_in_a_family(run: Run) -> None:
    run.log.info("from the parent")
    run.child("eggs").info("from eggs")
    run.child("eggs.fish").info("from a grandchild")
    run.child("beans").info("from a sibling")


def test_a_filter_on_the_handler_passes_only_its_logger_and_those_below(run: Run) -> None:
    run.handler.addFilter(logging.Filter(f"{run.log.name}.eggs"))
    log_in_a_family(run)
    assert [t.split(": ")[1] for t in run.texts()] == ["from eggs", "from a grandchild"]


def test_a_plain_callable_is_a_filter_too(run: Run) -> None:
    wanted = f"{run.log.name}.eggs"

    def only_eggs(record: logging.LogRecord) -> bool:
        return record.name == wanted or record.name.startswith(wanted + ".")

    run.handler.addFilter(only_eggs)
    log_in_a_family(run)
    assert [t.split(": ")[1] for t in run.texts()] == ["from eggs", "from a grandchild"]
    run.handler.removeFilter(only_eggs)
    run.log.info("no filter any more")
    assert run.texts()[-1].endswith("no filter any more")


def test_a_filter_can_add_a_field_that_the_formatter_uses(run: Run) -> None:
    def with_step(record: logging.LogRecord) -> bool:
        record.step = 42
        return True

    run.handler.addFilter(with_step)
    run.handler.setFormatter(logging.Formatter("step %(step)d %(message)s"))
    run.log.info("evaluated")
    assert run.texts() == ["step 42 evaluated"]


# --- formatting (FormatterTest, LoggerAdapterTest, ExceptionTest) ----------


@differs_on_purpose("formats only the text after the collector's")
def test_a_formatter_makes_the_text_after_the_collectors_own_time_and_level(run: Run) -> None:
    records: list[logging.LogRecord] = []
    run.log.addFilter(lambda record: records.append(record) or True)
    run.handler.setFormatter(logging.Formatter("%(levelname)s|%(name)s|%(funcName)s|%(message)s"))
    run.log.warning("shaped")
    run.log.warning("ends with a newline\n\n")
    first, second = run.entries()
    # The collector writes the record's own time and level before the text;
    # a levelname in the format repeats it.
    assert first.stamp == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(records[0].created))
    assert first.level == "WARNING"
    name = run.log.name
    assert first.text == (
        f"WARNING|{name}|test_a_formatter_makes_the_text_after_the_collectors_own_time_and_level"
        "|shaped"
    )
    # Final newlines are not lines of their own (Python's warnings end with one).
    assert second.text == f"WARNING|{name}|{first.text.split('|')[2]}|ends with a newline"
    assert "\n\n" not in read(run.path)


def test_the_default_text_is_the_loggers_name_and_the_message(run: Run) -> None:
    run.log.info("plain")
    run.handler.setFormatter(None)  # logging's own default: the message alone
    run.log.info("no name")
    assert run.texts() == [f"{run.log.name}: plain", "no name"]


def test_percent_arguments_and_a_mapping_argument_are_merged_in_the_process(run: Run) -> None:
    run.log.info("%s holds %d items (%.1f%%)", "cart", 3, 12.5)
    run.log.info("%(user)s logged in from %(host)s", {"user": "ada", "host": "h1"})
    run.log.info("a literal %s with no arguments")
    message = [t.split(": ", 1)[1] for t in run.texts()]
    assert message == [
        "cart holds 3 items (12.5%)",
        "ada logged in from h1",
        "a literal %s with no arguments",
    ]


class BraceMessage:
    """A message formatted with ``str.format`` only when a handler asks for it."""

    def __init__(self, template: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.template, self.args, self.kwargs = template, args, kwargs

    def __str__(self) -> str:
        return self.template.format(*self.args, **self.kwargs)


class BraceAdapter(logging.LoggerAdapter):
    """Lets callers write ``log.info("{} of {}", a, b)``."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            known = {k: kwargs.pop(k) for k in ("exc_info", "stack_info", "extra") if k in kwargs}
            self.logger.log(level, BraceMessage(msg, args, kwargs), stacklevel=2, **known)


def test_brace_style_through_an_adapter_and_through_a_formatter(run: Run) -> None:
    adapter = BraceAdapter(run.log, {})
    adapter.log(logging.WARNING, "{} of {total}", 3, total=10)
    run.handler.setFormatter(logging.Formatter("{name} » {funcName} » {message}", style="{"))
    run.log.info("formatted with braces")
    dollar = logging.Formatter("$levelname: $message", style="$")
    run.handler.setFormatter(dollar)
    run.log.info("formatted with dollars")
    name = run.log.name
    assert run.texts() == [
        f"{name}: 3 of 10",
        f"{name} » test_brace_style_through_an_adapter_and_through_a_formatter » "
        "formatted with braces",
        "INFO: formatted with dollars",
    ]


def test_a_message_that_is_not_a_string_is_written_as_its_str(run: Run) -> None:
    class Point:
        def __str__(self) -> str:
            return "Point(1, 2)"

    run.log.info({"lr": 0.1})
    run.log.info(42)
    run.log.info(Point())
    run.log.info(None)
    assert [t.split(": ", 1)[1] for t in run.texts()] == [
        "{'lr': 0.1}",
        "42",
        "Point(1, 2)",
        "None",
    ]


def test_the_traceback_and_the_stack_follow_the_line_once_each(run: Run) -> None:
    try:
        raise RuntimeError("deliberate mistake")
    except RuntimeError as exc:
        caught = exc
        run.log.exception("failed", stack_info=True)
    # An exception instance as exc_info, outside the except block.
    run.log.error("failed later", exc_info=caught)
    first, second = run.entries()
    head, rest = first.text.split("\n", 1)
    assert (first.level, head) == ("ERROR", f"{run.log.name}: failed")
    assert rest.startswith("Traceback (most recent call last):\n")
    assert rest.count("Traceback") == 1 and rest.count("Stack (most recent call last):") == 1
    # As logging's Formatter lays them out: the traceback, then the stack.
    assert rest.index("RuntimeError: deliberate mistake") < rest.index("Stack (most")
    assert rest.endswith('run.log.exception("failed", stack_info=True)')
    assert second.text.startswith(f"{run.log.name}: failed later\nTraceback")
    assert second.text.endswith("RuntimeError: deliberate mistake")


def test_extra_and_an_adapters_extra_reach_the_formatter(run: Run) -> None:
    run.handler.setFormatter(logging.Formatter("[%(user)s] %(message)s"))
    run.log.info("direct", extra={"user": "ada"})
    logging.LoggerAdapter(run.log, {"user": "grace"}).info("through an adapter")
    assert run.texts() == ["[ada] direct", "[grace] through an adapter"]


# --- errors in emit (StreamHandlerTest.test_error_handling) -----------------


def test_an_error_while_emitting_goes_to_handle_error_and_the_next_record_lands(
    run: Run, capfd: pytest.CaptureFixture[str]
) -> None:
    run.alone()
    run.log.info("%d apples", "not a number")  # TypeError when the message is made
    run.log.info("next record")
    assert run.texts() == [f"{run.log.name}: next record"]
    err = capfd.readouterr().err
    # logging's own report: the error, where it was logged, the message.
    assert "--- Logging error ---" in err and "TypeError" in err
    assert "Message: '%d apples'" in err and "Arguments: ('not a number',)" in err


def test_with_raise_exceptions_off_an_error_while_emitting_is_silent(
    run: Run, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run.alone()
    monkeypatch.setattr(logging, "raiseExceptions", False)

    class Broken(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            raise RuntimeError("deliberate mistake")

    run.handler.setFormatter(Broken())
    run.log.error("never written")
    run.handler.setFormatter(logging.Formatter("%(message)s"))
    run.log.error("written")
    assert run.texts() == ["written"]
    assert capfd.readouterr().err == ""


def test_a_subclass_can_take_over_handle_error(run: Run) -> None:
    failed: list[logging.LogRecord] = []

    class Keeping(Handler):
        def handleError(self, record: logging.LogRecord) -> None:
            failed.append(record)

    keeping = Keeping(run.logger)
    run.alone()
    run.log.removeHandler(run.handler)
    run.log.addHandler(keeping)
    run.log.info("%s and %s", "only one")
    assert [(r.msg, r.args) for r in failed] == [("%s and %s", ("only one",))]
    assert run.texts() == []


# --- close, flush and logging.shutdown (ShutdownTest, FileHandlerTest) -----


def test_logging_shutdown_flushes_then_closes_and_the_records_are_on_disk_by_close(
    run: Run,
) -> None:
    calls: list[tuple[str, int]] = []

    class Watched(Handler):
        def flush(self) -> None:
            super().flush()
            calls.append(("flush", len(entries(read(run.path)))))

        def close(self) -> None:
            calls.append(("close", len(entries(read(run.path)))))
            super().close()

    watched = Watched(run.logger)
    run.log.removeHandler(run.handler)
    run.log.addHandler(watched)
    for i in range(20):
        run.log.info("record %d", i)
    logging.shutdown(handlerList=[weakref.ref(watched)])
    assert calls == [("flush", 20), ("close", 20)]


def test_closing_the_handler_leaves_the_logger_open_and_later_records_still_land(
    run: Run,
) -> None:
    run.log.info("before the handler's close")
    run.handler.close()
    run.handler.close()  # twice is no error, as for logging's handlers
    # As a FileHandler reopens its file: the Logger belongs to whoever opened it.
    run.log.info("after the handler's close")
    run.logger.log_message("the Logger itself")
    assert [t.rsplit(": ", 1)[-1] for t in run.texts()] == [
        "before the handler's close",
        "after the handler's close",
        "the Logger itself",
    ]


# --- name and lock (HandlerTest.test_name; createLock/acquire/release) -----


def test_the_handler_has_a_settable_name(run: Run) -> None:
    assert run.handler.name is None and run.handler.get_name() is None
    run.handler.name = "run-log"
    assert run.handler.get_name() == "run-log"
    run.handler.set_name("renamed")
    assert run.handler.name == "renamed"
    run.handler.setLevel(logging.INFO)
    assert repr(run.handler) == "<Handler (INFO)>"


def test_emit_runs_under_the_handlers_lock_which_is_reentrant_and_can_be_recreated(
    run: Run,
) -> None:
    taken_elsewhere: list[bool] = []

    class Probe(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            def try_lock() -> None:
                taken = run.handler.lock.acquire(blocking=False)
                taken_elsewhere.append(taken)
                if taken:
                    run.handler.lock.release()

            other = threading.Thread(target=try_lock)
            other.start()
            other.join()
            return super().format(record)

    run.handler.setFormatter(Probe("%(message)s"))
    run.log.info("under the lock")
    assert taken_elsewhere == [False]
    # Reentrant: a thread holding it can still log through the handler.
    run.handler.acquire()
    run.handler.acquire()
    try:
        run.log.info("while held")
    finally:
        run.handler.release()
        run.handler.release()
    old = run.handler.lock
    run.handler.createLock()
    assert run.handler.lock is not old
    run.log.info("with a new lock")
    assert run.texts() == ["under the lock", "while held", "with a new lock"]


# --- QueueHandler / QueueListener (QueueHandlerTest) ------------------------


def queued(run: Run) -> tuple[logging.handlers.QueueHandler, queue.Queue]:
    """``run.log`` handing its records to a queue instead of to the handler."""
    records: queue.Queue = queue.Queue()
    front = logging.handlers.QueueHandler(records)
    run.log.removeHandler(run.handler)
    run.log.addHandler(front)
    return front, records


def test_behind_a_queue_listener_records_land_once_with_their_traceback_and_stack(
    run: Run,
) -> None:
    front, records = queued(run)
    front.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    listener = logging.handlers.QueueListener(records, run.handler)
    listener.start()
    try:
        run.log.warning("one")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            run.log.exception("two")
        run.log.critical("three", stack_info=True)
    finally:
        listener.stop()
    one, two, three = run.entries()
    # The queue's formatter made the message (traceback and stack included);
    # ours adds the name of the logger the record came from.
    name = run.log.name
    assert (one.level, one.text) == ("WARNING", f"{name}: WARNING one")
    assert two.level == "ERROR" and two.text.startswith(f"{name}: ERROR two\nTraceback")
    assert two.text.count("Traceback") == 1 and two.text.endswith(
        "ZeroDivisionError: division by zero"
    )
    assert three.level == "CRITICAL" and three.text.count("Stack (most recent call last):") == 1


def test_a_queue_listener_respects_the_handlers_level_when_asked(run: Run) -> None:
    _, records = queued(run)
    run.handler.setLevel(logging.ERROR)
    listener = logging.handlers.QueueListener(records, run.handler, respect_handler_level=True)
    listener.start()
    try:
        run.log.warning("below the handler's level")
        run.log.error("at it")
    finally:
        listener.stop()
    assert [e.level for e in run.entries()] == ["ERROR"]


# --- MemoryHandler (MemoryHandlerTest) --------------------------------------


def buffered(run: Run, capacity: int = 10, **options: Any) -> logging.handlers.MemoryHandler:
    memory = logging.handlers.MemoryHandler(capacity, logging.WARNING, run.handler, **options)
    run.log.removeHandler(run.handler)
    run.log.addHandler(memory)
    return memory


def test_a_memory_handler_passes_its_buffer_on_at_its_flush_level_and_capacity(
    run: Run,
) -> None:
    buffered(run)
    run.log.debug("1")
    run.log.info("2")
    assert run.entries() == []  # held by the MemoryHandler: nothing was emitted
    run.log.warning("3")
    assert [e.level for e in run.entries()] == ["DEBUG", "INFO", "WARNING"]
    for i in range(4, 13):
        run.log.debug(str(i))
    assert len(run.entries()) == 3
    run.log.debug("13")  # the tenth since the last flush
    assert [t.split(": ")[1] for t in run.texts()] == [str(i) for i in range(1, 14)]


def test_closing_a_memory_handler_passes_its_buffer_on_unless_told_not_to(run: Run) -> None:
    memory = buffered(run)
    run.log.info("kept until close")
    memory.close()
    assert [t.split(": ")[1] for t in run.texts()] == ["kept until close"]
    run.log.removeHandler(memory)
    memory = buffered(run, flushOnClose=False)
    run.log.info("dropped at close")
    memory.close()
    assert [t.split(": ")[1] for t in run.texts()] == ["kept until close"]


def test_a_memory_handlers_buffer_lands_when_the_interpreter_exits(tmp_path: Path) -> None:
    # logging flushes every handler at exit, after the Logger's own close:
    # the Handler flushes them first so the buffer reaches an open Logger.
    records, err = in_child(
        tmp_path,
        """
lg = Logger(LOG_DIR, "run", collector="thread", watcher=False)
target = Handler(lg)
for name, flush_on_close in (("kept", True), ("dropped", False)):
    memory = logging.handlers.MemoryHandler(
        100, logging.CRITICAL, target, flushOnClose=flush_on_close)
    log = logging.getLogger(name)
    log.addHandler(memory)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("buffered info")
    log.warning("buffered warning")
""",
    )
    assert [(e.level, e.text) for e in records] == [
        ("INFO", "kept: buffered info"),
        ("WARNING", "kept: buffered warning"),
    ]
    assert "kept" not in err


# --- dictConfig with a "()" factory (ConfigDictTest) ------------------------


def test_dict_config_builds_a_handler_for_a_logger_made_elsewhere(tmp_path: Path) -> None:
    records, _ = in_child(
        tmp_path,
        """
lg = Logger(LOG_DIR, "run", collector="thread", watcher=False, level=logging.DEBUG)
config = {
    "version": 1,
    "formatters": {"brief": {"format": "{name} | {message}", "style": "{"}},
    "filters": {"app_only": {"name": "app"}},
    "handlers": {
        "run_log": {
            "()": "roxxel.Handler",
            "logger": "ext://__main__.lg",
            "flush_timeout": 5.0,
            "level": "INFO",
            "formatter": "brief",
            "filters": ["app_only"],
        },
    },
    "root": {"level": "DEBUG", "handlers": ["run_log"]},
}
logging.config.dictConfig(config)
handler = logging.getLogger().handlers[0]
assert isinstance(handler, Handler) and handler.logger is lg, handler
assert (handler.name, handler.flush_timeout, handler.level) == ("run_log", 5.0, logging.INFO)
logging.getLogger("app.db").debug("below the handler's level")
logging.getLogger("app.db").info("passed")
logging.getLogger("other").warning("filtered out")
# Configuring again flushes and closes the old handler; the Logger stays open.
config["formatters"]["brief"]["format"] = "again: {message}"
logging.config.dictConfig(config)
assert handler not in logging.getLogger().handlers
logging.getLogger("app").info("through the new handler")
""",
    )
    assert [e.text for e in records] == ["app.db | passed", "again: through the new handler"]


# --- threads ------------------------------------------------------------------


def test_records_from_other_threads_land_whole_in_each_threads_order(run: Run) -> None:
    run.handler.setFormatter(logging.Formatter("%(threadName)s %(message)s"))

    def work(n: int) -> None:
        for i in range(50):
            run.log.info("%d", i)

    threads = [threading.Thread(target=work, args=(n,), name=f"worker{n}") for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = run.texts()
    assert len(texts) == 200
    for n in range(4):
        mine = [int(t.split()[1]) for t in texts if t.startswith(f"worker{n} ")]
        assert mine == list(range(50))


def test_a_close_on_another_thread_while_a_record_is_sent_hands_it_to_the_last_resort(
    run: Run, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Logger has checked that it is open; another thread closes it
    # before the record is queued.
    lg = run.logger

    def closed_meanwhile(record: tuple[Any, ...]) -> None:
        closer = threading.Thread(target=lg.close)
        closer.start()
        closer.join()
        lg._append_line(record)  # the closed Logger's: raises

    lg._append_line = closed_meanwhile  # type: ignore[method-assign]
    resort = Said()
    monkeypatch.setattr(logging, "lastResort", resort)
    run.alone()
    run.log.warning("raced with close")
    assert resort.messages == ["raced with close"]
    assert "Logging error" not in capfd.readouterr().err


# --- propagation and the last resort (LastResortTest) ----------------------


def test_records_go_on_to_the_parents_handlers_as_with_any_handler(run: Run) -> None:
    parent = Said()
    run.log.addHandler(parent)
    child = run.child("step")
    child.warning("from below")
    assert run.texts() == [f"{child.name}: from below"]
    assert parent.messages == ["from below"]
    child.propagate = False
    child.warning("kept below")
    assert len(run.texts()) == 1 and parent.messages == ["from below"]


def test_after_close_the_last_resort_takes_only_what_no_other_handler_took(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    resort = Said()
    resort.setLevel(logging.WARNING)
    monkeypatch.setattr(logging, "lastResort", resort)
    parent = Said()
    run.alone()
    run.log.removeHandler(run.handler)
    run.log.addHandler(parent)
    child = run.child("late")
    child.addHandler(run.handler)
    run.logger.close()
    # logging itself uses its last resort only when no handler was found:
    # the parent's handler took it, so the closed Logger's handler is silent.
    child.warning("a parent handler takes it")
    assert parent.messages == ["a parent handler takes it"] and resort.messages == []
    # Alone on the way up: the last resort, at its own level.
    child.propagate = False
    child.info("below the last resort's level")
    child.warning("nothing else takes it")
    assert resort.messages == ["nothing else takes it"]
    # Through a QueueListener nothing else on that path prints it either.
    listener = logging.handlers.QueueListener(queue.Queue(), run.handler)
    listener.start()
    listener.queue.put(logging.makeLogRecord({"name": "queued", "levelno": 30, "msg": "q"}))
    listener.stop()
    assert resort.messages[-1] == "q"


@differs_on_purpose("registered before the Logger was created")
def test_records_logged_at_exit_land_until_the_logger_closes_then_go_to_the_last_resort(
    tmp_path: Path,
) -> None:
    records, err = in_child(
        tmp_path,
        """
def registered_early():  # runs after the Logger's own close (atexit: last in, first out)
    logging.getLogger("early").info("early info")
    logging.getLogger("early").warning("early warning")
atexit.register(registered_early)

lg = Logger(LOG_DIR, "run", collector="thread", watcher=False)
logging.getLogger().addHandler(Handler(lg))
logging.getLogger().setLevel(logging.INFO)

def registered_late():  # runs before it
    logging.getLogger("late").info("late info")
atexit.register(registered_late)

class Finalized:
    def __del__(self):  # at interpreter teardown, after every atexit function
        try:
            raise ValueError("some error")
        except ValueError:
            logging.getLogger("teardown").exception("exception in __del__")

kept = Finalized()
logging.getLogger("main").info("main info")
""",
    )
    assert [e.text for e in records] == ["main: main info", "late: late info"]
    assert "early info" not in err and "early warning" in err
    assert "exception in __del__" in err and "ValueError: some error" in err


def test_each_deliberate_difference_is_stated_in_the_readme() -> None:
    marked, unstated = unstated_differences(__name__)
    assert marked == 3 and not unstated, f"the README does not say: {unstated}"
