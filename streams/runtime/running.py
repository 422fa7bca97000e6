"""Which cluster a command talks to, and what it remembers about it on local disk.

A running `up` can be found: the tools on the same machine reach its broker unasked.

`up` writes `up.json` (its bootstrap servers and process id) into the data directory while it
runs and removes it when it stops. A command run without KAFKA_BOOTSTRAP_SERVERS from the same
working directory (the data directory defaults to ./var) reads it, and trusts it only while that
process is alive: a file left by a killed `up` points at a broker that has gone with it.

Whatever the project keeps on local disk about a cluster (the import ledger, the workers' table
state) lives under `clusters/<cluster id>/` of the data directory: a fresh broker (a Tansu
restarted, a new cluster behind the same address) has another id, so an import it never saw is
never mistaken for one already made.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from streams.errors import BrokerError, ClusterRefused, InventoryError
from streams.runtime.broker import wait_for_kafka
from streams.settings import Settings

FILE = "up.json"
REFUSAL_PROBE_SECONDS = 3.0


@contextmanager
def announced(data_dir: Path, bootstrap: str) -> Iterator[Path]:
    """`up.json` in `data_dir` for as long as the block runs."""
    path = data_dir / FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"bootstrap_servers": bootstrap, "pid": os.getpid()}))
    partial.replace(path)  # whole or absent for a reader
    try:
        yield path
    finally:
        with suppress(FileNotFoundError):
            path.unlink()


def running_bootstrap(data_dir: Path) -> str | None:
    """The bootstrap servers of the `up` running on `data_dir`, or None."""
    try:
        found = json.loads((data_dir / FILE).read_text())
        pid, bootstrap = int(found["pid"]), str(found["bootstrap_servers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return bootstrap if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


def resolve_bootstrap(settings: Settings, check: bool = True) -> str:
    """The cluster a command uses: KAFKA_BOOTSTRAP_SERVERS, else the broker of an `up` running on
    this data directory. With `check` it must answer within KAFKA_TIMEOUT_SECONDS: an unreachable
    cluster is one line and a non-zero exit, not a client retrying for ever."""
    bootstrap = settings.kafka_bootstrap_servers or running_bootstrap(settings.data_dir)
    if not bootstrap:
        raise InventoryError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no `inventory-streams up` runs on "
            f"{settings.data_dir}"
        )
    if not check and settings.kafka_security_protocol != "PLAINTEXT":
        # worker and connect reconnect on their own, and would retry refused credentials for
        # ever; a refusal comes within a second of connecting, so a short probe finds it
        try:
            wait_for_kafka(bootstrap, REFUSAL_PROBE_SECONDS, settings)
        except ClusterRefused:
            raise
        except BrokerError:
            pass  # not answering yet: the process's own loop waits for it
    if check:
        timeout = settings.kafka_timeout_seconds
        try:
            wait_for_kafka(bootstrap, timeout, settings)
        except ClusterRefused:
            raise  # its own message says what to fix; "cannot reach" would mislead
        except BrokerError:
            origin = (
                "KAFKA_BOOTSTRAP_SERVERS"
                if settings.kafka_bootstrap_servers
                else f"the `up` running on {settings.data_dir}"
            )
            raise BrokerError(
                f"cannot reach Kafka at {bootstrap} (from {origin}) within {timeout:g} s "
                "(KAFKA_TIMEOUT_SECONDS)"
            ) from None
    return bootstrap


def cluster_dir(settings: Settings, bootstrap: str) -> Path:
    """`DATA_DIR/clusters/<id>`: local memory of the cluster at `bootstrap` (made on first use)."""
    metadata = wait_for_kafka(bootstrap, settings.kafka_timeout_seconds, settings)
    # a broker that reports no cluster id is known by its address (the best left to go on)
    cluster = metadata.cluster_id or "addr-" + hashlib.sha256(bootstrap.encode()).hexdigest()[:16]
    path = settings.data_dir / "clusters" / re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    path.mkdir(parents=True, exist_ok=True)
    return path
