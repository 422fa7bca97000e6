"""Worker metrics, built in one place from an injected registry: units in names, no SKU labels."""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streams.core.models import Alert
from streams.errors import InventoryError

# dead-letter reasons by class, first match wins: a bounded label from a free-text reason
REASON_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("unknown-location", re.compile(r"unknown location")),
    ("unknown-sku", re.compile(r"unknown (channel_)?sku")),
    ("unknown-channel", re.compile(r"unknown channel")),
    (
        "malformed",
        re.compile(
            r"malformed|must be a JSON object|tombstone|cut short|unexpected bytes|Avro|"
            r"does not belong|is not an event|undecodable"
        ),
    ),
    (
        "schema",
        re.compile(
            r"required field|unknown event type|must be a string|should be a valid|"
            r"must carry a timezone|extra inputs|field required"
        ),
    ),
    ("invalid-value", re.compile(r"cannot be negative|must not be 0|greater than|at most|less")),
)
OTHER = "other"
DEAD_LETTER_CLASSES = (*(name for name, _ in REASON_CLASSES), OTHER)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# scrapes at once; a connection over it is closed unanswered, so stalled clients cost no threads
MAX_METRICS_CONNECTIONS = 32

log = logging.getLogger(__name__)


def serve(
    registry: CollectorRegistry,
    port: int,
    host: str = "127.0.0.1",
    *,
    client_timeout: float = 10.0,
    max_connections: int = MAX_METRICS_CONNECTIONS,
) -> ThreadingWSGIServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread (port 0: a free one, see
    the returned server's `server_port`); a taken port is an InventoryError saying which setting
    moves it. A client whose request has not arrived `client_timeout` seconds after it connected
    is disconnected, and at most `max_connections` are served at once."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        server = _MetricsServer(
            (host, port),
            family[0][0],
            client_timeout=client_timeout,
            max_connections=max_connections,
        )
    except OSError as error:
        raise InventoryError(
            f"cannot serve metrics on port {port} ({error.strerror}): under `up` set "
            "METRICS_PORT (it uses that port and the next one per worker), else --metrics-port"
        ) from None
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _MetricsServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-connection server, its connections bounded in time and
    number: the standard library's waits for a request line forever, a thread per client."""

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        *,
        client_timeout: float,
        max_connections: int,
    ) -> None:
        self.address_family = family
        self.client_timeout = client_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _TimedHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug(
                "metrics: %d connections already; closed %s", self.max_connections, client_address
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Deadline(io.RawIOBase):
    """A socket's reads, all of them over by `deadline`: a socket timeout alone restarts with
    every byte, so a client trickling a byte a second would never time out."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _QuietAnswer(ServerHandler):
    """wsgiref's answer to one scrape, a failure one line in the log instead of a traceback the
    standard library prints to stderr: clients cause them (an Accept prometheus_client cannot
    parse, an answer not read within client_timeout), and a line per bad client is enough."""

    request_handler: _TimedHandler

    def log_exception(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType]
        | tuple[None, None, None],
    ) -> None:
        error, client = exc_info[1], self.request_handler.client_address
        if isinstance(error, (TimeoutError, ConnectionError)):
            log.debug("metrics: dropped a client %s: its answer was not read: %s", client, error)
        else:
            log.warning(
                "metrics: a request from %s failed, answered 500: %s (%s: %s)",
                client,
                self.request_handler.requestline[:200],
                type(error).__name__,
                error,
            )


class _TimedHandler(WSGIRequestHandler):
    """One scrape, its request read within the server's client_timeout; logs nothing per request."""

    server: _MetricsServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader: a socket timeout restarts with each byte
        deadline = time.monotonic() + self.server.client_timeout
        self.rfile = io.BufferedReader(_Deadline(self.connection, deadline))

    def handle(self) -> None:
        try:
            self._handle()
        except (TimeoutError, ConnectionError) as error:
            log.debug("metrics: dropped a client %s: %s", self.client_address, error)
            self.close_connection = True

    def _handle(self) -> None:
        """WSGIRequestHandler.handle, its answer written by a _QuietAnswer."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():  # an error has been answered
            return
        app = self.server.get_app()
        assert app is not None  # set by serve before the first request
        answer = _QuietAnswer(
            self.rfile,
            cast(IO[bytes], self.wfile),  # a socket writer, as WSGIRequestHandler passes it
            self.get_stderr(),
            self.get_environ(),
            multithread=False,
        )
        answer.request_handler = self
        answer.run(app)

    def get_environ(self) -> dict[str, Any]:
        # the request is in: the answer gets the whole timeout again, not what is left of it
        self.connection.settimeout(self.server.client_timeout)
        return super().get_environ()

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a line per scrape is noise."""


def consumer_lag_gauge(registry: CollectorRegistry, prefix: str = "inventory") -> Gauge:
    """The lag gauge, one definition for the workers' registry and the sinks'."""
    return Gauge(
        f"{prefix}_consumer_lag_records",
        "Records not yet consumed by a group on the partitions this process owns, by consumer "
        "group and topic",
        ["group", "topic"],
        registry=registry,
    )


def reason_class(reason: str) -> str:
    """The class of a dead-letter reason (one of DEAD_LETTER_CLASSES)."""
    for name, pattern in REASON_CLASSES:
        if pattern.search(reason):
            return name
    return OTHER


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, prefix: str = "inventory"
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, prefix
        self.events_in = Counter(
            f"{p}_events_in_total", "Business events read from inventory.events", registry=r
        )
        self.records_out = Counter(
            f"{p}_records_out_total", "Records produced, by kind", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            f"{p}_dead_letters_total",
            f"Records sent to inventory.dlq, by reason class ({', '.join(DEAD_LETTER_CLASSES)})",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(f"{p}_alerts_total", "Alerts raised, by type", ["type"], registry=r)
        self.reservations = Counter(
            f"{p}_reservation_decisions_total",
            "Reservation decisions, by outcome",
            ["status"],
            registry=r,
        )
        self.taken_now = Counter(
            f"{p}_api_requests_taken_total",
            "Requests of the API a worker serves, by how the SKU stage took them: `now` (at the "
            "broker's acknowledgement, in the process) or `fetched` (by the stage's next fetch)",
            ["how"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds",
            "Time to process one batch, by stage",
            ["stage"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.order_lines = Counter(
            f"{p}_order_lines_total",
            "Order lines recorded (each order once), by channel",
            ["channel"],
            registry=r,
        )
        self.oversold_lines = Counter(
            f"{p}_oversold_order_lines_total",
            "Order lines that left a location oversold (an oversell alert), by channel",
            ["channel"],
            registry=r,
        )
        self.availability_latency = Histogram(
            f"{p}_event_to_availability_seconds",
            "From the input record's Kafka timestamp to the send of the availability record it "
            "changed, by channel",
            ["channel"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.positions_held = Gauge(
            f"{p}_positions_held",
            "(SKU, location) positions in this worker's SKU table",
            registry=r,
        )
        self.listings_held = Gauge(
            f"{p}_listings_held",
            "Multi-partition listings (bundles, kits) in this worker's listing table",
            registry=r,
        )
        self.consumer_lag = consumer_lag_gauge(r, p)
        for name in DEAD_LETTER_CLASSES:  # every class present from the start: rates need a 0
            self.dead_letters.labels(name)
        self._latency_by_channel: dict[str, Histogram] = {}

    def channels(self, channels: Iterable[str]) -> None:
        """Start the per-channel series at 0, so an oversell rate exists before the first one."""
        for channel in channels:
            self.order_lines.labels(channel)
            self.oversold_lines.labels(channel)
            self.availability_latency.labels(channel)

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason_class(reason)).inc()

    def order_created(self, channel: str, lines: int) -> None:
        self.order_lines.labels(channel).inc(lines)

    def raised(self, alerts: Iterable[Alert]) -> None:
        """Alerts by type; each order line an oversell alert names counts once as oversold."""
        oversold: set[tuple[str | None, tuple[str, ...]]] = set()
        for alert in alerts:
            self.alerts.labels(alert.type).inc()
            if alert.type == "oversell":
                oversold.add((alert.channel, tuple(alert.ids[1:3])))  # (order id, line id)
        for channel, _ in oversold:
            self.oversold_lines.labels(channel or "unknown").inc()

    def availability_sent(self, channel: str, caused_at: float, now: float | None = None) -> None:
        """An availability record sent `now` (epoch seconds) for an input written at `caused_at`."""
        child = self._latency_by_channel.get(channel)
        if child is None:  # bound once per channel: labels() is a lock and a lookup
            child = self._latency_by_channel[channel] = self.availability_latency.labels(channel)
        child.observe(max(0.0, (time.time() if now is None else now) - caused_at))


class DriftMetrics:
    """Drift `reconcile` found, counted by a long-running process from its alerts: a CLI run
    ends before any Prometheus could scrape it."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "inventory") -> None:
        self.findings = Counter(
            f"{prefix}_drift_findings_total",
            "Drift alerts reconcile published on inventory.alerts, by the system whose count "
            "differs and kind (on-hand at a location, available on a channel)",
            ["system", "kind"],
            registry=registry,
        )

    def found(self, system: str, kind: str) -> None:
        self.findings.labels(system, kind).inc()
