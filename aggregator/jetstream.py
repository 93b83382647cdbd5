"""The link to a NATS JetStream cluster: the one module that imports ``nats``.

``nats-py`` is asyncio; a relay and a writer are a collector's synchronous
loop. :class:`JetStreamLink` runs the NATS connection on an event loop of
its own thread, and the loop's thread calls it through futures: a publish
returns a :class:`concurrent.futures.Future` of JetStream's acknowledgement,
and a consumer hands the messages it fetches to a callback. Every
completion calls ``wake`` (the collector's poll ends at once).

The connection never gives up: a cluster that is down, or not up yet, is
tried again every :data:`RECONNECT_SECONDS`, forever; what waits meanwhile
is the caller's to hold.

``nats-py`` is the ``jetstream`` extra: :func:`require_nats` says so in one
line when it is missing. Nothing of the single-collector path imports this
module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .stream_wire import STREAM_NAME, SUBJECT_ROOT, run_subjects

__all__ = [
    "MissingExtra",
    "require_nats",
    "StreamSettings",
    "DEFAULT_STREAM",
    "JetStreamLink",
    "Delivered",
    "RECONNECT_SECONDS",
]

RECONNECT_SECONDS = 0.5
# A consumer's fetch: messages at most per request, and how long it waits for one.
_FETCH_BATCH = 512
_FETCH_WAIT = 1.0
_CAUGHT_UP_PAUSE = 0.02
# Unacknowledged messages a writer's consumer may have out (acks follow each commit).
_MAX_ACK_PENDING = 65_536
# Past this, the server sends the writer's unacknowledged messages again (a
# writer that skips them by stream seq loses nothing; it only reads them twice).
_ACK_WAIT_SECONDS = 120.0


class MissingExtra(RuntimeError):
    """The ``jetstream`` extra (``nats-py``) is not installed."""


def require_nats() -> Any:
    """The ``nats`` package; :class:`MissingExtra` naming the extra when it is missing."""
    try:
        import nats
    except ImportError:
        raise MissingExtra(
            "the JetStream modes need the nats-py package: pip install 'roxxel[jetstream]'"
        ) from None
    return nats


@dataclass(frozen=True)
class StreamSettings:
    """The stream a relay or writer creates when it does not exist yet (an
    existing stream is used as it is). Why these, in README "Past one collector":

    * ``replicas``: every unit is on a quorum before a client is acknowledged;
    * ``duplicate_window``: a relay's republish of a unit is recognised within it;
    * ``max_bytes``/``max_age``: limits retention that *refuses* new units when
      full (discard new: the relays stop acknowledging and the clients hold their
      records) instead of dropping old ones a writer has not read.
    """

    replicas: int = 3
    duplicate_window: float = 120.0
    max_bytes: int = 8 * 2**30
    max_age: float = 7 * 86400.0


DEFAULT_STREAM = StreamSettings()


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message a writer's consumer fetched: its place in the stream, subject,
    body and headers, and the handle its acknowledgement needs."""

    stream_seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    handle: Any


class JetStreamLink:
    """A connection to the servers ``urls`` on its own thread; ``wake`` is
    called (from that thread) whenever something the caller waits for happened."""

    def __init__(
        self,
        urls: Sequence[str],
        name: str,
        wake: Callable[[], None],
        settings: StreamSettings = DEFAULT_STREAM,
        on_problem: Callable[[str], None] | None = None,
    ) -> None:
        self._nats = require_nats()
        self.urls = list(urls)
        self._name = name
        self._wake = wake
        self._settings = settings
        self._on_problem = on_problem or (lambda text: None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="roxxel-jetstream", daemon=True
        )
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._consumer: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()  # acks and purges on their way
        self.connected = False
        self._stream_ready: asyncio.Future = self._call(self._make_future()).result()
        self._call(self._connect())

    # -- the loop's side -----------------------------------------------------------

    def _call(self, coroutine: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _make_future(self) -> asyncio.Future:
        return self._loop.create_future()

    async def _connect(self) -> None:
        """Connect, trying again until a server answers; then make sure of the stream."""

        async def disconnected() -> None:
            self.connected = False
            self._wake()

        async def reconnected() -> None:
            self.connected = True
            self._wake()

        async def error(exc: Exception) -> None:
            self._on_problem(f"NATS: {exc or type(exc).__name__}")

        said = False
        while True:
            try:
                self._nc = await self._nats.connect(
                    servers=self.urls,
                    name=self._name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_SECONDS,
                    connect_timeout=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                    ping_interval=5,
                    max_outstanding_pings=2,
                )
                break
            except Exception as exc:  # noqa: BLE001 -- no server answers yet: tried again
                if not said:
                    said = True
                    self._on_problem(f"no NATS server answers yet: {_text(exc)}; trying again")
                await asyncio.sleep(RECONNECT_SECONDS)
        self.connected = True
        self._js = self._nc.jetstream()
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        """Create the stream if it does not exist, retrying until JetStream answers;
        then wait until it has a leader (it takes publishes from then on)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        settings = self._settings
        config = api.StreamConfig(
            name=STREAM_NAME,
            subjects=[f"{SUBJECT_ROOT}.>"],
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            max_bytes=settings.max_bytes,
            max_age=settings.max_age,
            storage=api.StorageType.FILE,
        )
        said = False
        while True:
            try:
                try:
                    info = await self._js.stream_info(STREAM_NAME)
                except NotFoundError:
                    info = await self._js.add_stream(config)
                if info.cluster is None or info.cluster.leader:
                    break
            except Exception as exc:  # noqa: BLE001 -- down, no leader yet, refused
                if not said:
                    said = True
                    self._on_problem(
                        f"stream {STREAM_NAME} is not available yet: {_text(exc)} (trying "
                        "again; a single NATS server needs --stream-replicas 1, a server "
                        "with less room for streams a smaller --stream-max-bytes)"
                    )
            await asyncio.sleep(RECONNECT_SECONDS)
        self._stream_ready.set_result(None)
        self._wake()

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str], timeout: float):
        await asyncio.wait_for(asyncio.shield(self._stream_ready), timeout)
        return await self._js.publish(
            subject, data, timeout=timeout, stream=STREAM_NAME, headers=headers
        )

    # -- the caller's side ---------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The largest message the servers take (their ``max_payload``)."""
        return int(getattr(self._nc, "max_payload", 0) or 1024 * 1024)

    @property
    def stream_ready(self) -> bool:
        return self._stream_ready.done()

    def publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float
    ) -> concurrent.futures.Future:
        """Publish to the stream; the future holds JetStream's acknowledgement
        (``.duplicate`` set for a unit it had) or the failure."""
        future = self._call(self._publish(subject, data, headers, timeout))
        future.add_done_callback(lambda _: self._wake())
        return future

    def consume(self, run: str, start_seq: int, deliver: Callable[[list[Delivered]], bool]) -> None:
        """Read ``run``'s subjects from stream seq ``start_seq`` on, in order, through
        a durable consumer made anew there; ``deliver`` takes each fetch (it
        returns ``False`` while its caller holds too much: the fetching waits).
        Replaces a consumption started before."""
        self._call(self._start_consumer(run, start_seq, deliver)).result()

    async def _start_consumer(
        self, run: str, start_seq: int, deliver: Callable[[list[Delivered]], bool]
    ) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 -- it is replaced
                pass
        self._consumer = self._loop.create_task(self._consume(run, start_seq, deliver))

    async def _consume(
        self, run: str, start_seq: int, deliver: Callable[[list[Delivered]], bool]
    ) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        durable = f"roxxel-writer-{run}"
        said = False
        subscription = None
        while True:
            try:
                if subscription is None:
                    await asyncio.wait_for(asyncio.shield(self._stream_ready), None)
                    try:
                        await self._js.delete_consumer(STREAM_NAME, durable)
                    except NotFoundError:
                        pass
                    await self._js.add_consumer(
                        STREAM_NAME,
                        api.ConsumerConfig(
                            durable_name=durable,
                            filter_subject=run_subjects(run),
                            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                            opt_start_seq=max(1, start_seq),
                            ack_policy=api.AckPolicy.ALL,
                            ack_wait=_ACK_WAIT_SECONDS,
                            max_ack_pending=_MAX_ACK_PENDING,
                        ),
                    )
                    subscription = await self._js.pull_subscribe_bind(durable, STREAM_NAME)
                messages = await subscription.fetch(_FETCH_BATCH, timeout=_FETCH_WAIT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a fetch that timed out, or JetStream down
                if _is_timeout(exc):
                    continue
                if not said:
                    said = True
                    self._on_problem(f"reading stream {STREAM_NAME}: {_text(exc)}")
                subscription = None  # made anew where the last delivered message left off
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            said = False
            batch = [
                Delivered(m.metadata.sequence.stream, m.subject, m.data, dict(m.headers or {}), m)
                for m in messages
            ]
            if batch:
                start_seq = batch[-1].stream_seq + 1
                while not deliver(batch):
                    await asyncio.sleep(0.01)
                self._wake()
            if len(batch) < _FETCH_BATCH // 4:
                # Caught up with a live stream: fetching again at once would ask
                # for a few units at a time (a request each, and the servers'
                # work); a commit waits longer than this anyway.
                await asyncio.sleep(_CAUGHT_UP_PAUSE)

    def purge(self, run: str, upto: int) -> None:
        """Remove ``run``'s units up to stream seq ``upto`` from the stream (in the
        background; one that fails is done by a later one)."""

        async def purge() -> None:
            try:
                await self._js.purge_stream(STREAM_NAME, subject=run_subjects(run), seq=upto + 1)
            except Exception as exc:  # noqa: BLE001 -- down: the next purge covers it
                self._on_problem(f"purging written units of run {run}: {_text(exc)}")

        self._loop.call_soon_threadsafe(lambda: self._track(self._loop.create_task(purge())))

    def _track(self, task: asyncio.Task) -> None:
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def ack(self, message: Delivered) -> None:
        """Acknowledge ``message`` and, the consumer acking all, every one before it."""

        self._loop.call_soon_threadsafe(
            lambda: self._track(self._loop.create_task(_ack(message.handle)))
        )

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is sent (acknowledgements), close the connection, end the thread."""

        async def finish() -> None:
            if self._sending:  # the last acknowledgements and purge go out first
                await asyncio.wait(self._sending, timeout=timeout)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            if self._nc is not None and not self._nc.is_closed:
                try:
                    await asyncio.wait_for(self._nc.flush(), timeout)
                except Exception:  # noqa: BLE001 -- down: nothing more can be sent
                    pass
                await self._nc.close()

        try:
            self._call(finish()).result(timeout + 5)
        except Exception:  # noqa: BLE001 -- closing regardless
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _ack(handle: Any) -> None:
    try:
        await handle.ack()
    except Exception:  # noqa: BLE001 -- not sent (down): the next ack covers it
        pass


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.TimeoutError) or type(exc).__name__.endswith("TimeoutError")


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
