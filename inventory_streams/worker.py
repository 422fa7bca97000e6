"""One stream worker: reads the catalog from Kafka, then runs the Faust topology until stopped.

With an API port, the worker also serves the reservation API (streams.api). A request is produced
to inventory.events like any other; when its SKU lives on a partition of this worker, the SKU stage
decides it at the broker's acknowledgement (take_now in streams.topology) and hands the decision
to the waiting request in the process: no fetch, no read back through
inventory.reservation-decisions. A request for a SKU another worker owns is passed to that
worker's API; if it cannot be reached, the answer comes from the topic, as the API process
answers every request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import faust

from streams.api import Decisions, run_api
from streams.errors import BrokerError, InventoryError
from streams.metrics import Metrics, serve
from streams.runtime.catalog_store import read_latest
from streams.runtime.faust_private import BoundedStopWorker
from streams.runtime.running import cluster_dir
from streams.settings import Settings
from streams.topology import create_app


def run_worker(
    settings: Settings,
    bootstrap: str,
    clock: str = "wall",
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    api_port: int = 0,
    api_host: str = "0.0.0.0",
    api_url: str | None = None,
) -> None:
    if api_port and not settings.channel_tokens:
        raise InventoryError("the reservation API needs CHANNEL_TOKENS (channel id -> token)")
    deadline = time.monotonic() + 30
    catalog = read_latest(bootstrap)
    while catalog is None:
        if time.monotonic() > deadline:
            raise BrokerError(
                "no catalog on inventory.catalog: run `inventory-streams catalog FILE`"
            )
        time.sleep(0.5)
        catalog = read_latest(bootstrap)
    # table state belongs to one cluster: another one behind the same address starts afresh
    settings = settings.model_copy(update={"data_dir": cluster_dir(settings, bootstrap)})
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    if metrics_port:
        serve(
            metrics.registry,
            metrics_port,
            metrics_host,
            client_timeout=settings.http_client_timeout_seconds,
        )
    # table state is long-lived: scanning it in every young-generation collection costs throughput
    gc.set_threshold(100_000, 50, 1000)
    # where the other workers reach this one's API (they pass it requests for its SKUs)
    url = api_url or f"http://{'127.0.0.1' if api_host in ('0.0.0.0', '') else api_host}:{api_port}"
    app = create_app(
        settings, bootstrap, catalog, metrics, clock_mode=clock, url=url if api_port else None
    )
    if api_port:
        serve_reservations(app, settings, bootstrap, api_port, api_host, url)
    logging.getLogger("faust").setLevel(logging.WARNING)
    # SIGTERM ends it within STOP_GRACE_SECONDS even with the broker gone (Faust's stop waits on it)
    worker = BoundedStopWorker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every record:
    # every debug line of aiokafka and Faust would then be built, only for its handler to drop it
    worker.spinner = None
    worker.execute_from_commandline()


def serve_reservations(
    app: faust.App, settings: Settings, bootstrap: str, port: int, host: str, url: str
) -> None:
    """The reservation API as a task of the worker, on its event loop, with in-process decisions."""
    runtime = app.inventory_runtime  # type: ignore[attr-defined]

    def attach(decisions: Decisions) -> None:
        runtime.local_decisions = decisions.offer_many

    @app.task
    async def reservation_api() -> None:
        try:
            await run_api(  # from the worker's catalog: the API follows later versions on its own
                settings,
                bootstrap,
                runtime.catalog,
                asyncio.Event(),
                port,
                host=host,
                attach=attach,
                take_now=runtime.take_now,
                route=runtime.owner_of,
                url=url,
                live_state=runtime.live_sku,
                registry=runtime.metrics.registry,
            )
        finally:  # Faust cancels the task when the worker stops
            runtime.local_decisions = None
