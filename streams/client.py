"""The one Kafka client configuration: every librdkafka client, the Faust app and the Schema
Registry client get their address and security (SSL, SASL PLAIN/SCRAM) from here."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from streams.errors import SecurityError
from streams.settings import Settings, get_settings


def security_config(settings: Settings) -> dict[str, str]:
    """The librdkafka security keys for `settings` (empty on PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    config: dict[str, str] = {}
    if protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = protocol
    if protocol.startswith("SASL_"):
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise SecurityError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
            )
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol.endswith("SSL"):
        files = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
        }
        config |= {key: str(path) for key, path in files.items() if path is not None}
        if settings.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
        check = settings.kafka_ssl_check_hostname
        config["ssl.endpoint.identification.algorithm"] = "https" if check else "none"
    return config


def kafka_config(
    bootstrap: str, extra: Mapping[str, Any] | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """A librdkafka configuration for `bootstrap` with the cluster's security, plus `extra`."""
    settings = settings or get_settings()
    return {"bootstrap.servers": bootstrap, **security_config(settings), **(extra or {})}


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Faust (aiokafka) side: the same CA, client key and host check."""
    ca = settings.kafka_ssl_ca_location
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if settings.kafka_ssl_certificate_location is not None:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                str(settings.kafka_ssl_certificate_location),
                str(settings.kafka_ssl_key_location or settings.kafka_ssl_certificate_location),
                password.get_secret_value() if password else None,
            )
    except (OSError, ssl.SSLError) as error:
        raise SecurityError(f"cannot load the TLS files of KAFKA_SSL_*: {error}") from None
    if not settings.kafka_ssl_check_hostname:
        context.check_hostname = False
    return context


def faust_credentials(settings: Settings) -> Any:
    """faust's broker_credentials for `settings`: None on PLAINTEXT, else SSL or SASL ones."""
    import faust

    security_config(settings)  # the same checks and messages as the librdkafka clients
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def registry_config(url: str, settings: Settings | None = None) -> dict[str, str]:
    """The Schema Registry client's configuration, with basic auth when it is set."""
    settings = settings or get_settings()
    config = {"url": url}
    auth = settings.schema_registry_basic_auth_user_info
    if auth is not None:
        config["basic.auth.user.info"] = auth.get_secret_value()
    return config
