"""Finding rank 0's collector through JAX's distributed key-value store.

When ``jax.distributed.initialize()`` has run and no endpoint is given, rank
0's Logger binds its collector on TCP and publishes ``tcp://HOST:PORT`` under
``roxxel/{prefix}/collector``; every other rank reads it. HOST is the
address this machine uses to reach JAX's coordinator (so it is reachable
from the other hosts), unless the collector is bound to a specific address.

Only the private ``jax._src.distributed`` state is read (the path JAX's own
array serialization uses); JAX is never imported here and its backend is
never started. The blocking get releases the GIL, and runs on the client's
sender thread, so a rank never waits for rank 0 inside a ``log_*`` call.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from .diagnostics import diagnostics
from .security import ClientKeys
from .transport import DealerTransport
from .wakepipe import WakePipe

__all__ = [
    "kv_client",
    "collector_key",
    "advertised_host",
    "publish_endpoint",
    "DiscoveringTransport",
]


_LOOKUP_MS = 500


def kv_client() -> Any | None:
    """JAX's key-value client once ``jax.distributed.initialize()`` has returned, else ``None``.

    ``initialize`` sets ``client`` *before* it connects, and a key-value call
    on a client still connecting makes JAX abort the process. Its last step
    sets ``partition_index`` on the state (JAX >= 0.7); older versions are
    trusted once their preemption manager exists, the step after connecting.
    """
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    client = getattr(state, "client", None)
    if client is None:
        return None
    if hasattr(type(state), "partition_index"):
        return client if "partition_index" in vars(state) else None
    return client if getattr(state, "preemption_sync_manager", None) is not None else None


def collector_key(prefix: str) -> str:
    return f"roxxel/{prefix}/collector"


def advertised_host(bind_host: str) -> str:
    """The address other hosts should use for a collector bound on ``bind_host``."""
    if bind_host not in ("0.0.0.0", "*", "::", ""):
        return bind_host
    distributed = sys.modules.get("jax._src.distributed")
    coordinator = getattr(getattr(distributed, "global_state", None), "coordinator_address", None)
    if coordinator:
        host = coordinator.rsplit(":", 1)[0].strip("[]")
        try:
            # A UDP "connect" sends nothing: it only asks the kernel which
            # local address routes to the coordinator.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((host, 9))
                return probe.getsockname()[0]
        except OSError:
            pass
    return socket.gethostname()


def publish_endpoint(client: Any, prefix: str, endpoint: str) -> None:
    client.key_value_set(collector_key(prefix), endpoint, allow_overwrite=True)


class DiscoveringTransport:
    """A transport whose endpoint is read from JAX's key-value store on first use.

    Until the endpoint is known ``send`` refuses frames (the sender keeps
    them) and ``receive`` spends its wait on the key-value store instead. If
    JAX's distributed client is not initialised yet (a Logger created before
    ``jax.distributed.initialize()``), it keeps looking for it. After
    ``timeout`` seconds it stops looking and says so on stderr; what was
    logged stays with the sender (and ends in the undelivered file at close).
    """

    def __init__(
        self,
        prefix: str,
        sender_id: bytes,
        timeout: float,
        on_found: Callable[[str], None] | None = None,
        keys: ClientKeys | None = None,
        log: logging.Logger | None = None,
    ):
        self._diag = log or diagnostics("roxxel.client")
        self.connects = 0
        self._keys = keys
        self._on_found = on_found
        self._prefix = prefix
        self._sender_id = sender_id
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._inner: Any = None
        self._gave_up = False

    @property
    def endpoint(self) -> str:
        if self._inner is not None:
            return self._inner.endpoint
        return f"(not found in JAX's key-value store under {collector_key(self._prefix)!r})"

    def send(self, frame: bytes) -> bool:
        return self._inner is not None and self._inner.send(frame)

    def send_many(self, frames: list[bytes]) -> bool:
        return self._inner is not None and self._inner.send_many(frames)

    def receive(self, timeout: float, wake: WakePipe | None = None) -> list[bytes]:
        if self._inner is not None:
            frames = self._inner.receive(timeout, wake)
            self.connects = self._inner.connects
            return frames
        self._look(timeout)
        return []

    def _look(self, timeout: float) -> None:
        if self._gave_up:
            # The sender keeps cutting and bounding its batches (and, idle, is
            # not woken by a record: at most a lookup's time late, to nowhere).
            time.sleep(min(timeout, _LOOKUP_MS / 1000))
            return
        if time.monotonic() > self._deadline:
            self._gave_up = True
            self._diag.warning(
                "roxxel: no collector endpoint under %r in JAX's key-value store after %s s; "
                "records stay in this process",
                collector_key(self._prefix),
                self._timeout,
            )
            return
        client = kv_client()
        if client is None:
            time.sleep(_LOOKUP_MS / 1000)
            return
        try:
            # Half a second a call, not the sender's 5 ms tick: thousands of
            # ranks polling the coordinator must not flood it.
            endpoint = client.blocking_key_value_get(collector_key(self._prefix), _LOOKUP_MS)
        except Exception:  # DEADLINE_EXCEEDED until rank 0 publishes
            return
        self._inner = DealerTransport(endpoint, self._sender_id, keys=self._keys, log=self._diag)
        if self._on_found is not None:
            self._on_found(endpoint)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
