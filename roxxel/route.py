"""Where a Logger's records go, and what has to run to take them there.

:func:`open_route` is all of a Logger's wiring, done once at construction:

1. the endpoint: ``aggregator=``, else ``$ROXXEL_AGGREGATOR``; with
   neither, rank 0 starts its own collector (:mod:`roxxel.embedded`) and,
   in a multi-process run, publishes its address in JAX's key-value store
   (:mod:`roxxel.discovery`) -- now, or once ``jax.distributed`` has been
   initialised -- while the other ranks look it up there from their sender
   thread; a rank that can find no collector has nowhere to send;
2. the client: a :class:`~roxxel.client.Sender` over a DEALER (or a
   discovering transport) with the run's CURVE keys;
3. the watcher process that reports this process's death
   (:mod:`roxxel.watcher`), told where the collector is, also once found.

Rank 0's own collector's endpoint is also written to the run's
``.{prefix}_collector.json`` (:mod:`roxxel.runfiles`) for ``roxxel status
DIR``; a clean stop removes it.

The :class:`Route` it returns starts senders for the Logger (which owns and
closes them) and, at :meth:`Route.close`, stops the embedded collector and
releases the watcher. Threading:
built and closed on the Logger's thread; the discovery callback runs on the
sender thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import __version__, codec, schema
from .client import Sender
from .diagnostics import diagnostics
from .discovery import DiscoveringTransport, advertised_host, kv_client, publish_endpoint
from .embedded import EmbeddedCollector, start_embedded
from .runfiles import remove_collector_file, write_collector_file
from .security import (
    ENV_CLIENTS,
    ENV_SERVER_SECRET,
    ClientKeys,
    ServerKeys,
    server_keys,
)
from .transport import DealerTransport, check_endpoint
from .undelivered import undelivered_path
from .watcher import Watcher, watch_target, watcher_enabled
from .watcher import acquire as acquire_watcher
from .watcher import found as watcher_found
from .watcher import release as release_watcher

__all__ = ["Route", "RouteOptions", "open_route", "ENV_AGGREGATOR", "ENV_COLLECTOR_BIND"]

ENV_AGGREGATOR = "ROXXEL_AGGREGATOR"
ENV_COLLECTOR_BIND = "ROXXEL_COLLECTOR_BIND"


@dataclass(frozen=True)
class RouteOptions:
    """The Logger's keywords that decide the route (see :class:`roxxel.Logger`)."""

    log_dir: str
    prefix: str
    rank: int
    world_size: int
    aggregator: str | None = None
    collector: str = "process"
    collector_bind: str | None = None
    close_timeout: float = 30.0
    discovery_timeout: float = 300.0
    flush_interval: float = 0.01
    max_buffer_bytes: int = 256 * 1024 * 1024
    no_answer_warning: float | None = 5.0
    watcher: bool | None = None
    keys: ClientKeys | None = None
    curve_server_secret: str | None = None
    curve_clients: str | None = None
    # What rank 0's own collector writes (see roxxel.schema.check_file_options).
    metrics_files: tuple[str, ...] = schema.DEFAULT_METRICS_FILES
    csv_floats: str = "original"


@dataclass
class Route:
    """A Logger's way to its collector, and what runs beside its sender."""

    options: RouteOptions
    endpoint: str | None  # where the sender connects (None: found later, or nowhere)
    discover: bool  # the endpoint comes from JAX's key-value store
    remote: bool = False  # a daemon's (aggregator=): the run's files are where it says
    embedded: EmbeddedCollector | None = None
    collector_endpoint: str | None = None  # rank 0's own collector, as the others reach it
    collector_file: str | None = None  # where the tools find it (runfiles.running_collector)
    # Rank 0 says where a daemon writes the run's files (a forked child does not).
    announce: bool = False
    forked: bool = False  # in a forked child: its senders do not start the run
    watcher: Watcher | None = field(default=None, repr=False)
    _watched: str | None = None  # the endpoint the watcher was told
    _found: str | None = None  # found by discovery (maybe before the watcher started)
    # Where the route's parts (sender, transports, watcher) say what goes wrong.
    log: logging.Logger = field(default_factory=lambda: diagnostics("roxxel.client"))

    @property
    def reachable(self) -> bool:
        """Whether records have somewhere to go (or will, once discovery finds it)."""
        return self.endpoint is not None or self.discover

    def start_sender(self, on_idle: Callable[[Sender], bool] | None = None) -> Sender:
        """A new client, with a new sender id (a forked child calls this again);
        ``on_idle``: see :class:`~roxxel.client.Sender`."""
        o = self.options
        sender_id = secrets.token_bytes(codec.SENDER_ID_LEN)
        hello = codec.Hello(
            sender_id=sender_id,
            host=socket.gethostname(),
            rank=o.rank,
            pid=os.getpid(),
            process_count=o.world_size,
            prefix=o.prefix,
            version=__version__,
            starts=not self.forked,
        )
        transport: DealerTransport | DiscoveringTransport
        if self.discover:
            transport = DiscoveringTransport(
                o.prefix,
                sender_id,
                o.discovery_timeout,
                on_found=self._found_at,
                keys=o.keys,
                log=self.log,
            )
        else:
            assert self.endpoint is not None
            transport = DealerTransport(self.endpoint, sender_id, keys=o.keys, log=self.log)
        return Sender(
            transport,
            hello,
            flush_interval=o.flush_interval,
            max_buffer_bytes=o.max_buffer_bytes,
            log=self.log,
            no_answer_warning=o.no_answer_warning,
            undelivered_file=undelivered_path(o.log_dir, o.prefix, o.rank),
            announce=self.announce,
            on_idle=on_idle,
        )

    def start_watcher(self) -> None:
        """The process's watcher, unless turned off (or useless: a thread collector
        dies with the process, nobody would be told)."""
        o = self.options
        if not watcher_enabled(o.watcher) or (o.collector == "thread" and self.embedded):
            return
        target = self._target(self.endpoint)
        try:
            self.watcher = acquire_watcher(
                rank=o.rank, prefix=o.prefix, process_count=o.world_size, endpoint=target
            )
        except OSError as exc:  # logging goes on without one
            self.log.warning("roxxel: no watcher process for this process: %s", exc)
            return
        self._watched = target
        if self._found is not None:  # found before the watcher started
            self._found_at(self._found)

    def after_fork(self) -> None:
        """In a forked child: the collector is the parent's, and so is saying where it writes."""
        self.embedded = None
        self.announce = False
        self.forked = True

    def close(self) -> None:
        """Stop the embedded collector (after it wrote everything) and release the watcher."""
        try:
            if self.embedded is not None:
                code = self.embedded.stop(self.options.close_timeout)
                if code not in (0, None):
                    self.log.warning("roxxel: the embedded collector exited with code %s", code)
                elif code == 0 and self.collector_file is not None:
                    # Otherwise left for the tools to say the collector is gone.
                    remove_collector_file(self.collector_file, self.embedded.pid)
        finally:
            if self.watcher is not None:
                release_watcher(self.watcher, self._watched)

    def _found_at(self, endpoint: str) -> None:
        """On the sender thread: discovery found the collector; the watcher reports there."""
        self._found = endpoint
        if self.watcher is not None:
            target = self._target(endpoint)
            watcher_found(self.watcher, self._watched, target)
            self._watched = target

    def _target(self, endpoint: str | None) -> str | None:
        return None if endpoint is None else watch_target(endpoint, self.options.keys)


def open_route(options: RouteOptions) -> Route:
    """Resolve the endpoint and start what the route needs; the sender is not started yet."""
    o = options
    endpoint = o.aggregator or os.environ.get(ENV_AGGREGATOR) or None
    multi = o.world_size > 1
    if endpoint is not None:
        # At Logger(), in one line: ZeroMQ would retry a name that does not
        # resolve in silence for the whole run.
        source = "aggregator=" if o.aggregator else f"{ENV_AGGREGATOR}="
        if set(o.metrics_files) != set(schema.DEFAULT_METRICS_FILES) or o.csv_floats != "original":
            raise ValueError(
                f"metrics_files and csv_floats choose the files of the Logger's own collector; "
                f"this one logs to a daemon ({source}), whose files are its own: start it with "
                "roxxel-aggregator --metrics-files/--csv-floats"
            )
        return Route(
            o, check_endpoint(endpoint, source), discover=False, remote=True, announce=o.rank == 0
        )
    if o.rank != 0:
        return Route(o, None, discover=multi)
    os.makedirs(o.log_dir, exist_ok=True)
    bind = o.collector_bind or os.environ.get(ENV_COLLECTOR_BIND) or None
    if bind is None and multi:
        bind = "tcp://0.0.0.0:0"
    embedded = start_embedded(
        o.collector,
        o.log_dir,
        o.prefix,
        bind,
        drain_senders=o.close_timeout if multi else 0.0,
        curve=_collector_keys(o.keys, o.curve_server_secret, o.curve_clients),
        files=(o.metrics_files, o.csv_floats),
        parent_watched=watcher_enabled(o.watcher),
    )
    route = Route(o, embedded.local_endpoint, discover=False, embedded=embedded)
    if multi and embedded.endpoint.startswith("tcp://"):
        route.collector_endpoint = _publish(embedded.endpoint, o.prefix, o.discovery_timeout)
    if not embedded.endpoint.startswith("inproc://"):  # no other process reaches that
        try:
            route.collector_file = write_collector_file(
                o.log_dir, o.prefix, embedded.local_endpoint, embedded.pid, route.collector_endpoint
            )
        except OSError as exc:  # only the tools lose: the run goes on
            route.log.warning("roxxel: cannot write where the collector listens: %s", exc)
    return route


def _publish(bound: str, prefix: str, timeout: float) -> str:
    """Tell the other ranks where rank 0's collector is, as soon as JAX can; its address."""
    host, port = bound[len("tcp://") :].rsplit(":", 1)
    advertised = f"tcp://{advertised_host(host)}:{port}"
    client = kv_client()
    if client is not None:
        publish_endpoint(client, prefix, advertised)
    else:  # created before jax.distributed.initialize(): publish once it has run
        threading.Thread(
            target=_publish_when_ready,
            args=(prefix, advertised, timeout),
            name="roxxel-publish",
            daemon=True,
        ).start()
    return advertised


def _publish_when_ready(prefix: str, endpoint: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = kv_client()
        if client is not None:
            publish_endpoint(client, prefix, endpoint)
            return
        time.sleep(0.1)  # JAX offers no event to wait on: its state is polled
    diagnostics("roxxel.client").warning(
        "roxxel: jax.distributed was not initialised within %s s; the other ranks cannot "
        "find this collector (%s)",
        timeout,
        endpoint,
    )


def _collector_keys(
    keys: ClientKeys | None, secret_file: str | None, clients_dir: str | None
) -> ServerKeys | None:
    """A rank 0's own collector speaks CURVE when its clients do."""
    if keys is None:
        return None
    secret_file = secret_file or os.environ.get(ENV_SERVER_SECRET) or None
    clients_dir = clients_dir or os.environ.get(ENV_CLIENTS) or None
    if secret_file is None or clients_dir is None:
        raise ValueError(
            "with CURVE keys and no aggregator endpoint, rank 0 runs the collector itself: it "
            f"needs curve_server_secret= (or {ENV_SERVER_SECRET}), the collector's "
            f"NAME.key_secret, and curve_clients= (or {ENV_CLIENTS}), the directory of the "
            "allowed clients' NAME.key files"
        )
    return server_keys(secret_file, clients_dir)
