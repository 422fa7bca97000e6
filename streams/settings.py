"""One frozen settings object, read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import InvalidSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never echo a secret it was given
    model_config = SettingsConfigDict(
        frozen=True, env_prefix="", extra="ignore", hide_input_in_errors=True
    )

    # Kafka: unset means "start the embedded broker".
    kafka_bootstrap_servers: str | None = Field(default=None)
    schema_registry_url: str | None = Field(default=None)
    schemas_dir: Path = REPO_ROOT / "schemas"
    # how long a command waits for the cluster to answer before it gives up with one line
    kafka_timeout_seconds: float = 15.0
    # Secured clusters: one set of settings for every client (librdkafka, Faust/aiokafka, the
    # registry); secrets are SecretStr so no repr, log line or status view ever shows them, and
    # each can come from a file (KAFKA_SASL_PASSWORD_FILE, ...) as container platforms mount them
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None  # default: the system's trusted CAs
    kafka_ssl_certificate_location: Path | None = None  # a client certificate (mutual TLS)
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    schema_registry_basic_auth_user_info: SecretStr | None = None  # USER:PASSWORD
    kafka_sasl_username_file: Path | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_key_password_file: Path | None = None
    schema_registry_basic_auth_user_info_file: Path | None = None
    # the broker `up` starts when no cluster is configured: auto is Apache Kafka (durable, in the
    # data directory) where Java and bin/prepare-kafka's build are present, else memory-only Tansu
    embedded_broker: Literal["auto", "kafka", "tansu"] = "auto"
    embedded_kafka_home: Path = REPO_ROOT / "build" / "kafka" / "kafka_2.12-2.3.0"

    # Topology sizing.
    topic_partitions: int = 4
    topic_replication: int = 1
    events_retention_ms: int = -1  # the event log is the source of truth: keep it

    # Workers.
    app_id: str = "inventory-streams"
    # local state and logs: under the working directory, never inside the installed package
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "var")
    consumer_session_timeout_ms: int = 6000  # Tansu joins wait ~half of this
    # Faust fixes its consumers' fetch wait at 1.5 s, and Tansu answers an empty fetch only when the
    # wait is over, even if data arrives: every hop of the topology would wait that long
    consumer_fetch_max_wait_ms: int = 20
    commit_interval_seconds: float = 1.0
    # `up` starts a worker that exited again, unless it exited this many times within the window
    worker_restart_limit: int = Field(default=5, ge=1)
    worker_restart_window_seconds: float = Field(default=60.0, gt=0)
    # how long the stages' output producer gathers records before a request: each request costs
    # the broker CPU (Tansu: most of a core at a few hundred a second), each ms adds latency
    producer_linger_ms: float = 2.0
    # a stage handles what arrived in each such window as one batch, and sends its outputs
    # together: fewer, larger record batches. Tansu's CPU per request grows with the batches a
    # partition holds, so on it 20 ms gave a lower latency at 1,000 events/s than 5 ms did
    stage_batch_ms: float = 20.0
    # SKU states a worker keeps decoded, those written last; it keeps the others as their
    # changelog records' bytes (~130 bytes a position instead of ~940) and decodes one when an
    # event needs it (~20 µs). 0: keep every state decoded
    warm_skus: int = Field(default=20_000, ge=0)
    catalog_file: Path = REPO_ROOT / "deploy" / "catalog.yaml"
    catalog_check_seconds: float = 2.0  # how soon a worker notices a catalog nobody announced

    # HTTP surfaces.
    webhook_port: int = 8088
    # under `up`, Prometheus metrics on this port + i: `up` itself (sinks, sources, drift) at + 0,
    # worker i at + 1 + i; `worker` and `connect` alone serve them on their --metrics-port
    metrics_port: int = Field(default=9100, ge=1, le=65535)
    api_port: int = 8080
    # how long the API's producer gathers requests into one record batch. Each batch costs the
    # embedded broker CPU on every later fetch of its partition: at 500 requests/s, 4 ms cut the
    # broker from 80% to 60% of a core and the p99 from 28-31 to 20-23 ms (1 ms before)
    api_linger_ms: int = 4
    # the API refuses a larger request body with a 413, before it reads the rest
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # the webhook receiver refuses a larger delivery with a 413, before it reads the rest: 4 MiB
    # is over 10,000 SPEC events in one JSON Lines batch, and Shopify's webhooks are far smaller
    webhook_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # the API and the webhook receiver close a connection that has not sent a whole request line
    # and headers this long after it opened (or after its last answer: idle keep-alive too),
    # answer 408 to a body still incomplete after it, and drain an unread body no longer; the
    # metrics servers close a connection whose request has not arrived by then
    http_client_timeout_seconds: float = Field(default=10.0, gt=0)
    channel_tokens: dict[str, str] = Field(default_factory=dict)  # channel id -> bearer token
    webhook_secrets: dict[str, str] = Field(default_factory=dict)  # source -> HMAC secret

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        """KAFKA_SASL_PASSWORD_FILE=/run/secrets/x reads KAFKA_SASL_PASSWORD from that file."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for name in SECRET_FILES:
            path = values.get(f"{name}_file")
            if path is None or values.get(name) is not None:
                continue
            try:
                values[name] = Path(path).read_text().strip()
            except OSError as error:
                # names the file, never its content
                raise ValueError(f"{name.upper()}_FILE={path}: {error.strerror}") from None
        return values


SECRET_FILES = (
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_key_password",
    "schema_registry_basic_auth_user_info",
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise InvalidSettings(settings_problem(error)) from None


def settings_problem(error: ValidationError) -> str:
    """One line naming each environment variable that is wrong and why (never its value)."""
    problems = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        problems.append(f"{name}: {item['msg']}")
    return "bad setting: " + "; ".join(problems)
