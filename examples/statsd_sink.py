"""An example third-party sink: every store operation as a StatsD timer, over UDP.

Load it with ``features-gql serve --plugins-dir examples`` (or ship it as a package
with an entry point in the ``features_gql`` group). Configure with ``STATSD_HOST``
(default 127.0.0.1) and ``STATSD_PORT`` (default 8125). Lines look like::

    features_gql.store.has:0.052|ms|#store:sqlite,outcome:ok,injected:false

The hook runs on features-gql's sink thread, so a slow or unreachable StatsD server
never slows a request; UDP sends do not block anyway.
"""

from __future__ import annotations

import os
import socket

from features_gql import hookimpl
from features_gql.events import OperationEvent

_address = (os.environ.get("STATSD_HOST", "127.0.0.1"), int(os.environ.get("STATSD_PORT", "8125")))
_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def format_event(event: OperationEvent) -> bytes:
    tags = f"store:{event.store},outcome:{event.outcome},injected:{str(event.injected).lower()}"
    return f"features_gql.store.{event.op}:{event.duration * 1000:.3f}|ms|#{tags}".encode()


@hookimpl
def features_gql_operation_event(event: OperationEvent) -> None:
    _socket.sendto(format_event(event), _address)
