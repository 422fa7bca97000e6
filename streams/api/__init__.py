"""The reservation API of SPEC §7: HTTP request/reply in front of the reservation stage.

Guarantee: a 201 or 409 is the stream's own decision, read back from
`inventory.reservation-decisions` after the request event was acknowledged by the broker
(acks=all, idempotent producer). The hold itself is made by the worker that owns the SKU's
partition, serialized with that SKU's other events; this process keeps no inventory state, so any
number of API processes can run side by side. Requests are idempotent by `reservation_id`: a retry
is produced again with the same event id and answered with the decision the stream republishes.

Routes: `POST /reservations`, `GET /reservations/{reservation_id}`,
`DELETE /reservations/{reservation_id}`, `GET /availability/{channel}/{channel_sku}`,
`GET /explain/{channel}/{channel_sku}`, `GET /health`, `GET /openapi.json` (the contract,
schemas/openapi.json). Every request but /health carries
`Authorization: Bearer <token>` of a channel (settings.channel_tokens), and a channel acts only for
itself. Every error is a JSON object `{"error": <message>, "status": <code>}`; when the error is
about a reservation (409), the body is the reservation's decision and `status` is its status.
A 201 is the decision: `held` (one entry per SKU and location), `placement`
(`{sku: {location: units}}`, a hold split across locations in sourcing order) and `expires_at`.
A rejection's 409 carries `shortfall` (per request line) and `shortfall_by_sku` (the lines'
units added up per SKU, against what that SKU could hold). A body over settings.api_max_body_bytes
is a 413, a body whose Content-Type is not application/json a 415 (one sent without a
Content-Type is read as JSON), one not complete within settings.http_client_timeout_seconds a
408, and a request aiohttp cannot parse a JSON 400 (streams.runtime.http): no refusal produces
anything. A client that sends `Expect: 100-continue` gets the 401, 413 or 415 its headers earn
instead of the 100, before it sends the body.

The package, top to bottom (one way: a module imports only those below it, as an import-linter
contract in pyproject.toml states; `decisions` and `views` are independent of each other):

- `handlers`: `ReservationApi`, the routes and their authentication, `make_app`, and `run_api`
  with `main` (`python -m streams.api`), which serve it;
- `routing`: a worker passing a request (a reservation, an explain) to the worker that owns its
  key (`OwnerRouting`);
- `decisions`: the stream's decisions and the requests waiting on them (`Decisions`,
  `DecisionFeed`);
- `views`: availability as published and the SKU states, for explain (`AvailabilityView`,
  `StateView` with `ChangelogReader`, `ViewFeed`; `LiveState`, a worker's own states from its
  memory);
- `feed`: the background reader thread both feeds are.
"""

from streams.api.decisions import LOOKBACK_SECONDS, Decision, DecisionFeed, Decisions
from streams.api.handlers import (
    DECISION_TIMEOUT_SECONDS,
    MAX_ID_LENGTH,
    OPENAPI_FILE,
    PRODUCE_DEADLINE_SECONDS,
    RETRY_AFTER_SECONDS,
    ApiMetrics,
    ReservationApi,
    TakeNow,
    api_of,
    main,
    make_app,
    openapi_document,
    run_api,
)
from streams.api.routing import ROUTED_HEADER, OwnerRouting, Route
from streams.api.views import AvailabilityView, ChangelogReader, LiveState, StateView, ViewFeed

__all__ = [
    "DECISION_TIMEOUT_SECONDS",
    "LOOKBACK_SECONDS",
    "MAX_ID_LENGTH",
    "OPENAPI_FILE",
    "PRODUCE_DEADLINE_SECONDS",
    "RETRY_AFTER_SECONDS",
    "ROUTED_HEADER",
    "ApiMetrics",
    "AvailabilityView",
    "ChangelogReader",
    "Decision",
    "DecisionFeed",
    "Decisions",
    "LiveState",
    "OwnerRouting",
    "ReservationApi",
    "Route",
    "StateView",
    "TakeNow",
    "ViewFeed",
    "api_of",
    "main",
    "make_app",
    "openapi_document",
    "run_api",
]
