"""One stream worker: reads the catalog from Kafka, then runs the Faust topology until stopped."""

from __future__ import annotations

import gc
import logging
import time

import faust
from prometheus_client import start_http_server

from streams.errors import BrokerError
from streams.metrics import Metrics
from streams.runtime.catalog_store import read_latest
from streams.settings import Settings
from streams.topology import create_app


def run_worker(
    settings: Settings, bootstrap: str, clock: str = "wall", metrics_port: int = 0
) -> None:
    deadline = time.monotonic() + 30
    catalog = read_latest(bootstrap)
    while catalog is None:
        if time.monotonic() > deadline:
            raise BrokerError(
                "no catalog on inventory.catalog: run `inventory-streams catalog FILE`"
            )
        time.sleep(0.5)
        catalog = read_latest(bootstrap)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    # table state is long-lived: scanning it in every young-generation collection costs throughput
    gc.set_threshold(100_000, 50, 1000)
    app = create_app(settings, bootstrap, catalog, metrics, clock_mode=clock)
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every record:
    # every debug line of aiokafka and Faust would then be built, only for its handler to drop it
    worker.spinner = None
    worker.execute_from_commandline()
