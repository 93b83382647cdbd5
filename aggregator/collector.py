"""The collector: a ROUTER socket in, the sinks out, acks back.

One cycle is poll → decode → dispatch → commit → ack. What each frame means
is the ledger's to decide (:mod:`aggregator.ledger`: apply, re-ack, refuse);
when what was applied becomes durable is the group commit's
(:mod:`aggregator.commit`); this module moves bytes between the socket and
those two, and writes what the ledger says to apply through the sinks.

Threading: a :class:`Collector` is driven by one thread (``run`` or repeated
``serve_once``); ``stop`` and ``reopen`` may be called from any thread or a
signal handler.

Ordering and delivery (exactly once into the files): a sender's batch is
applied only if its seq is the next one expected from that sender; a
duplicate is only re-acknowledged, a gap writes nothing and re-acknowledges
the last durable seq (the client then resends). Each cycle drains what is
waiting on the socket and writes it; then it group-commits -- every sink
synced to disk, then the checkpoint replaced atomically -- and only then
sends one cumulative ack per sender touched. If writing fails (``OSError``:
disk full, unwritable), the files are rewound to the last checkpoint and
nothing is acknowledged: the clients keep the batches and resend them. On
start the collector loads its checkpoint and rewinds the files to it, so
what a killed collector wrote after its last commit is written again once,
from the resent batches.

Malformed input (bad msgpack, wrong shapes, batches from a sender that never
said hello, invalid records, non-scalar metric values) is counted in
:attr:`Collector.stats` and reported once per sender in the system log; it
never stops the loop. A batch with a valid envelope but a body that can never
be applied, and each invalid record, is acknowledged once and saved to the
quarantine dot-file ``.{prefix}_quarantine.jsonl``.

A collector serves one run (:meth:`Collector.for_log_dir`, and a Logger's
own collector), or every run whose clients reach it
(:meth:`Collector.for_runs`: the daemon without ``--prefix``): then each
client's ``filename_prefix`` names its run, whose files, ledger, checkpoint
and lock are its own (:mod:`aggregator.run`), opened at its first hello and
closed when it has been idle without senders; the daemon's own reports go
to ``{log_dir}/roxxel-aggregator_system.log``. A client whose run cannot be
served (a prefix that is not a file name, too many open runs, a run another
collector holds) gets a ``refusal`` frame saying why.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

import zmq

from roxxel import codec
from roxxel.diagnostics import diagnostics
from roxxel.security import ServerKeys

from . import complaints
from .acks import Acks
from .answers import RateMeter, answer, stats_line
from .curve import Refusal
from .ledger import (
    Apply,
    Asked,
    Closed,
    Foreign,
    Introduced,
    Ledger,
    Poisoned,
    Resent,
    TooMany,
)
from .pacing import CommitPacing
from .router import Router
from .run import Run
from .runs import Refused, Runs
from .sinks import DEFAULT_FILES, FileOptions, Sink, default_sinks

__all__ = ["Collector", "default_sinks", "DAEMON_NAME"]

# At most one commit per this many seconds, except when a client says bye
# (see aggregator.pacing).
DEFAULT_COMMIT_INTERVAL = 0.05
# How long an embedded collector whose parent died waits for that process's
# watcher to report how it ended (it does within about 0.6 s), and for the
# notices of the ranks that die with it.
_AFTER_PARENT_DEATH = 5.0
# A cycle takes at most this many frames (a message may carry many) before
# it may commit and ack, so acks keep flowing under a flood.
_MAX_MESSAGES_PER_CYCLE = 256
DAEMON_NAME = "roxxel-aggregator"
# Refused senders remembered, so their other frames are not reported as malformed.
_REFUSED_KEPT = 4096


class Collector:
    """Receive batches on ``bind``, write them through ``sinks``.

    With ``checkpoint`` (a file path) delivery is exactly once across
    restarts; without it, acks follow a flush only (for tests and tools).
    With ``curve`` only clients holding one of its allowed keys get in
    (:mod:`aggregator.curve`), and a sender id belongs to the key that said
    hello with it: frames of another key naming it are refused. ``ledger``
    sets the bounds on senders (and the clock that forgets silent ones);
    ``log`` takes the collector's own diagnostics (default: stderr, see
    :mod:`roxxel.diagnostics`); they and its reports in the log are signed
    ``name`` (a Logger's own collector: ``roxxel collector``).
    """

    def __init__(
        self,
        bind: str,
        sinks: Sink,
        *,
        checkpoint: str | None = None,
        quarantine: str | None = None,
        context: zmq.Context | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
        ledger: Ledger | None = None,
        log: logging.Logger | None = None,
        name: str = DAEMON_NAME,
        home: Run | None = None,
        root: str | None = None,
        echo: TextIO | None = None,
        router: Router | None = None,
        files: FileOptions = DEFAULT_FILES,
    ):
        self.name = name  # how its messages sign: the program the user started
        self._diag = log or diagnostics("roxxel.aggregator")
        # One run's files, or (serving many runs) the daemon's own log; ``home``:
        # a run opened already (files, lock, checkpoint), see for_log_dir.
        home_run = home or Run(
            sinks,
            ledger or Ledger(),
            Counter(),
            self._diag,
            name=name,
            checkpoint=checkpoint,
            quarantine=quarantine,
        )
        # ``root``: a run per client prefix under it (see aggregator.runs).
        self.runs = Runs(
            home_run, root=root, echo=echo, diagnostics=self._diag, name=name, files=files
        )
        self.stats: Counter[str] = home_run.stats
        self._writing = home_run  # the run a write failure belongs to
        self._refused_ids: dict[bytes, None] = {}  # senders refused lately, oldest first
        self._rate = RateMeter()
        self._started = time.time()
        self._pacing = CommitPacing(commit_interval)
        self._acks = Acks()
        self._reopen = self._reload_keys = False
        if home is None:
            home_run.commits.resume()
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and
        # Event.set() takes a lock that a second signal would wait on forever.
        self._stopping = False
        # ``router``: bound already at ``bind`` (see for_log_dir).
        self._router = router or Router(bind, context, curve)
        self.endpoint = self._router.endpoint
        # The log's text goes to tools only where readers are known: CURVE
        # clients, or whoever can reach a local endpoint.
        self._serves_log = curve is not None or self._router.is_local

    @classmethod
    def for_log_dir(
        cls,
        bind: str,
        log_dir: str,
        prefix: str,
        echo: TextIO | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
        name: str = DAEMON_NAME,
        files: FileOptions = DEFAULT_FILES,
    ) -> Collector:
        """A collector owning the run ``{log_dir}/{prefix}_*`` (the files of
        ``files``), its checkpoint and quarantine.

        Raises ``OSError`` if another collector holds the run's lock, or if
        ``bind`` cannot be bound. It binds first: a collector that cannot
        serve creates no file.
        """
        router = Router(bind, curve=curve)
        return cls._around(
            router,
            lambda: Run.open(
                log_dir, prefix, echo, Ledger(), Counter(), _diagnostics(), name=name, files=files
            ),
            commit_interval,
            curve,
            name,
        )

    @classmethod
    def for_runs(
        cls,
        bind: str,
        log_dir: str,
        echo: TextIO | None = None,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        curve: ServerKeys | None = None,
        name: str = DAEMON_NAME,
        files: FileOptions = DEFAULT_FILES,
    ) -> Collector:
        """A collector of every run that reaches it: ``{log_dir}/{prefix}_*`` per
        client prefix (the files of ``files``); its own reports in
        ``{log_dir}/{name}_system.log``.

        Raises ``OSError`` if another collector serves ``log_dir`` so, or if
        ``bind`` cannot be bound (then it has created nothing).
        """
        router = Router(bind, curve=curve)

        def home() -> Run:
            os.makedirs(log_dir, exist_ok=True)
            return Run.open(
                log_dir, name, echo, Ledger(), Counter(), _diagnostics(), name=name, log_only=True
            )

        return cls._around(
            router, home, commit_interval, curve, name, os.path.abspath(log_dir), echo, files
        )

    @classmethod
    def _around(
        cls,
        router: Router,
        open_home: Callable[[], Run],
        commit_interval: float,
        curve: ServerKeys | None,
        name: str,
        root: str | None = None,
        echo: TextIO | None = None,
        files: FileOptions = DEFAULT_FILES,
    ) -> Collector:
        """A collector on ``router`` (bound) whose home is the run ``open_home()``
        opens (files, lock, checkpoint)."""
        try:
            run = open_home()
        except BaseException:
            router.close()
            raise
        try:
            return cls(
                router.endpoint,
                run.sinks,
                commit_interval=commit_interval,
                curve=curve,
                name=name,
                home=run,
                root=root,
                echo=echo,
                router=router,
                files=files,
            )
        except BaseException:
            try:
                run.close()
            finally:
                router.close()
            raise

    # -- what it serves ----------------------------------------------------------

    @property
    def _home(self) -> Run:
        return self.runs.home

    @property
    def sinks(self) -> Sink:
        return self._home.sinks

    @property
    def ledger(self) -> Ledger:
        return self._home.ledger

    @property
    def log_dir(self) -> str | None:
        return self.runs.log_dir

    @property
    def prefix(self) -> str | None:
        """The run served (``None``: every run that reaches it)."""
        return self.runs.prefix

    # -- control, from any thread ------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it drains what has arrived, then returns."""
        self._stopping = True
        self._router.wake()

    def reopen(self) -> None:
        """Ask :meth:`run` to reopen the files (after log rotation moved them) and,
        with CURVE, to read the allowed clients' keys again."""
        self._reopen = self._reload_keys = True
        self._router.wake()

    # -- the loop ----------------------------------------------------------------

    def run(
        self,
        parent_alive: Callable[[], bool] | None = None,
        poll: float = 0.1,
        drain_senders: float = 0.0,
        stats_every: float = 0.0,
        stats_out: TextIO | None = None,
        parent_pid: int | None = None,
        parent_watched: bool = True,
    ) -> None:
        """Serve until :meth:`stop` (or until ``parent_alive()`` turns false), then drain.

        When the parent (process ``parent_pid``) died, its watcher's death
        notice is waited for, at most a few seconds (without ``parent_watched``,
        only a quiet spell).

        With ``drain_senders``, a stop request keeps serving until every rank
        of the run has said bye (see :meth:`senders_done`), at most that long.
        With ``stats_every``, a stats line goes to ``stats_out`` that often.
        """
        next_check = 0.0
        next_stats = time.monotonic() + stats_every
        last_records = self.stats["records"]
        while not self._stopping:
            self.serve_once(poll)
            if self._reopen:
                self._reopen_files()
            if stats_every > 0 and time.monotonic() >= next_stats:
                rate = (self.stats["records"] - last_records) / stats_every
                last_records = self.stats["records"]
                next_stats += stats_every
                line = stats_line(self.name, self.runs, self.stats, rate)
                print(line, file=stats_out or sys.stderr, flush=True)
            if parent_alive is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.2
                if not parent_alive():
                    self._home.guarded(
                        self._home.log,
                        logging.WARNING,
                        "parent process ended; writing what arrived",
                    )
                    self._await_death_notices(parent_pid if parent_watched else None)
                    break
        else:
            deadline = time.monotonic() + drain_senders
            while not self.senders_done() and time.monotonic() < deadline:
                self.serve_once(min(poll, max(0.0, deadline - time.monotonic())))
        while self.serve_once(0.01):
            pass
        for run in self.runs.all():
            summary = run.deaths.summary()
            if summary is not None:
                run.guarded(run.log, logging.CRITICAL, summary)
            run.commit()
        self._send_acks()

    def serve_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` s (less when a commit is due), apply what
        arrived; commit and acknowledge when a commit is due: at once, unless
        the last one was less than ``commit_interval`` ago. After a trickle,
        sleep until a commit may be due, then take all that came meanwhile.
        Returns messages handled."""
        nap = self._pacing.nap()
        if nap is not None:
            self._router.wait_for_wake(min(timeout, nap))
            timeout = 0.0
        timeout = self._pacing.poll_timeout(timeout)
        if any(r.commits.needs_rewind and not r.commits.roll_back() for r in self.runs.all()):
            # The files cannot be rewound yet: read nothing (it could not be
            # written), wait for the disk or a stop instead of spinning.
            self._router.wait_for_wake(max(timeout, 0.1))
            return 0
        ready = self._router.poll(timeout)
        handled, records = 0, self.stats["records"]
        try:
            self._writing = self._home
            for refusal in ready.refusals:
                self._refused(refusal)
            while ready.messages and handled < _MAX_MESSAGES_PER_CYCLE:
                try:
                    message = self._router.receive()
                except zmq.Again:
                    break
                peer, frames = message.peer, message.frames
                handled += max(1, len(frames))  # a message may carry many
                self._writing = self._home
                if message.refused is not None:
                    self.stats["oversized_messages"] += 1
                    self._bad(peer, f"{message.refused}: dropped unread")
                    continue
                if not frames:
                    self._bad(peer, "message without a frame")
                    continue
                if not self._router.allows(message.key):
                    self._revoked(peer, message.key)
                    continue
                for data in frames:  # a client sends what it has as one message
                    self._dispatch(peer, data, message.key, message.source)
        except OSError as exc:
            self._writing.commits.failed(exc)
        if self._pacing.commit_now(any(r.commits.dirty for r in self.runs.all())):
            for run in self.runs.all():
                run.commit()
        self._send_acks()
        for run in self.runs.all():
            self._forget_idle(run)
        now = time.monotonic()
        self._close_idle_runs(now)
        self._rate.sample(now, self.stats["records"])
        self._pacing.cycle_done(handled, self.stats["records"] - records)
        return handled

    def _dispatch(self, peer: bytes, data: bytes, key: str | None, source: str) -> None:
        """Do what the ledger of the frame's run decides for it."""
        run = self.runs.route(data)
        if isinstance(run, Refused):
            self._refuse(peer, run)
            return
        self._writing = run
        event = run.ledger.receive(data, key, source, peer)
        run.active = time.monotonic()
        if isinstance(event, Apply):
            run.apply(event.batch, event.state)
            event.state.bytes += len(data)
            self._acks.owe(peer, run, event.batch.sender_id)
        elif isinstance(event, Resent):
            # Answered without decoding the body: the client resends from the ack.
            self.stats["duplicate" if event.duplicate else "gap"] += 1
            self._acks.owe(peer, run, event.sender_id)
        elif isinstance(event, Introduced):
            if event.new:
                self.stats["senders"] += 1
                if event.hello.starts and event.hello.rank == 0:
                    run.guarded(run.started, event.hello)
            if event.overclaimed:
                self.stats["overclaiming_hellos"] += 1
                run.report(*complaints.overclaimed(peer, event))
            if event.missing:
                self.stats["missing_batches"] += event.missing[1] - event.missing[0] + 1
                run.report(*complaints.missing(peer, event))
            self.runs.joined(event.hello.sender_id, run)
            self._acks.owe(peer, run, event.hello.sender_id, hello=True)
        elif isinstance(event, Closed):
            run.commits.dirty |= event.known
            self.runs.left(event.bye.sender_id)
            self._acks.owe_bye(peer, event.bye, run)
            self._pacing.soon()  # a closing client waits for this ack
        elif isinstance(event, Poisoned):
            run.poisoned(event.error, data, event.state)
            self._acks.owe(peer, run, event.error.sender_id)
        elif isinstance(event, Asked):
            self._answer(peer, event.query)
        elif isinstance(event, TooMany):
            # Refused, counted, reported once (per address); its batches are then
            # malformed frames. The client says hello again until it gets in.
            self.stats["refused_senders"] += 1
            run.report(*complaints.too_many(peer, event, run.ledger))
        elif isinstance(event, Foreign):
            self.stats["foreign_frames"] += 1
            run.report(*complaints.foreign(peer, event))
        else:
            self._bad(peer, event.problem, data)

    def _refuse(self, peer: bytes, refused: Refused) -> None:
        hello, why = refused.hello, refused.reason
        self.stats["refused_runs"] += 1
        # Its batches that came with the hello are the refusal's, not malformed frames.
        self._refused_ids[hello.sender_id] = None
        while len(self._refused_ids) > _REFUSED_KEPT:
            del self._refused_ids[next(iter(self._refused_ids))]
        self._router.send(peer, codec.encode(codec.Refusal(hello.sender_id, 0, {"reason": why})))
        self._report_home(*complaints.refused_run(hello, why))

    def _close_idle_runs(self, now: float) -> None:
        """Close the runs no sender uses any more (all said bye, or were forgotten)."""
        waiting = self._acks.runs_waiting()
        for run in self.runs.close_idle(now, waiting):
            self._home.guarded(run.close)

    def _forget_idle(self, run: Run) -> None:
        forgotten = run.ledger.forget_idle()
        if not forgotten:
            return
        for sender_id in forgotten:
            self.runs.left(sender_id)
        self.stats["forgotten_senders"] += len(forgotten)
        text = complaints.forgotten(self.name, len(forgotten), run.ledger)
        run.guarded(run.log, logging.INFO, text)

    def _send_acks(self) -> None:
        """Acknowledge what is durable to every sender heard since the last acks
        (a run's once it is committed)."""
        for peer, frame in self._acks.due():
            self._router.send(peer, frame)

    # -- committing --------------------------------------------------------------

    def _reopen_files(self) -> None:
        self._reopen = False
        gate = self._router.gate
        if gate is not None and self._reload_keys:
            self._reload_keys = False
            try:
                gate.reload()
                allowed = len(gate.keys.allowed)
                self._diag.info("%s: %d client key(s) allowed", self.name, allowed)
            except (OSError, ValueError) as exc:
                self._diag.warning("%s: keeping the allowed keys: %s", self.name, exc)
        for run in self.runs.all():
            if not run.commit(even_clean=True):
                # The files stay as they are until they are back at the
                # checkpoint and committed: reopened then, on a later pass.
                self._reopen = True
                continue
            try:
                run.sinks.reopen()
            except OSError as exc:  # some files may be new, the others are the old ones
                self._diag.error("%s: reopening the files failed: %s", self.name, exc)
            # Nothing is uncommitted: the files open now are where a roll back returns to.
            run.commits.reopened()
            run.commit(even_clean=True)

    # -- problems ----------------------------------------------------------------

    def _report_home(self, who: bytes, what: str, text: str) -> None:
        """A problem of no run's: in the collector's own log, a write failure its own."""
        self._home.guarded(self._home.report, who, what, text)

    def _refused(self, refusal: Refusal) -> None:
        self.stats["refused_connections"] += 1
        self._report_home(*complaints.curve_refusal(refusal))

    def _revoked(self, peer: bytes, key: str | None) -> None:
        self.stats["refused_connections"] += 1
        self._report_home(
            peer, "revoked", f"refused frames from key {key}: no longer among the allowed keys"
        )

    def _bad(self, peer: bytes, problem: str, data: bytes = b"") -> None:
        if data and self._refused_ids and _sender_of(data) in self._refused_ids:
            self.stats["refused_frames"] += 1  # a refused client's, said already
            return
        self.stats["bad_frames"] += 1
        self._report_home(
            peer, "frame", f"malformed frame from peer {peer.hex() or '?'}: {problem}"
        )

    # -- answers -----------------------------------------------------------------

    def _answer(self, peer: bytes, query: codec.Query) -> None:
        reply = answer(
            query,
            self.runs,
            self._serves_log,
            endpoint=self.endpoint,
            pid=os.getpid(),
            curve=self._router.gate is not None,
            uptime=time.time() - self._started,
            records_per_second=self._rate.rate(),
            stats=dict(self.stats),
        )
        self._router.send(peer, reply)  # if the tool's queue is full, it asks again

    # -- the end -----------------------------------------------------------------

    def senders_done(self) -> bool:
        """Every rank of every run has said hello, and every sender that did has said bye."""
        return all(run.ledger.done() for run in self.runs.all())

    def _await_death_notices(self, parent_pid: int | None) -> None:
        """After the parent died: serve until its watcher's notice has come (none
        to wait for when ``parent_pid`` is None: it had no watcher) and then a
        quiet spell has passed (other ranks die with it), a few seconds at most."""
        now = time.monotonic()
        deadline, last_heard = now + _AFTER_PARENT_DEATH, now
        while (now := time.monotonic()) < deadline:
            heard = parent_pid is None or self._home.deaths.heard_from(parent_pid)
            if heard and now - last_heard >= 0.5:
                return
            if self.serve_once(0.05):
                last_heard = time.monotonic()

    def close(self) -> None:
        try:
            self.runs.close()
        finally:
            self._router.close()


def _diagnostics() -> logging.Logger:
    return diagnostics("roxxel.aggregator")


def _sender_of(data: bytes) -> bytes | None:
    try:
        return codec.decode_envelope(data).sender_id
    except codec.CodecError:
        return None
