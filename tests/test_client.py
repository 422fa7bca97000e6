"""One Kafka client configuration from the settings: librdkafka keys, Faust credentials, the
registry's basic auth; secrets from files and never in a repr or an error."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from streams.client import faust_credentials, kafka_config, registry_config
from streams.errors import SecurityError
from streams.settings import Settings

SECRET = "s3cret-Pa55word"


def test_plaintext_is_the_address_and_nothing_else() -> None:
    config = kafka_config("b:9092", {"group.id": "g"}, Settings(_env_file=None))
    assert config == {"bootstrap.servers": "b:9092", "group.id": "g"}


def test_sasl_ssl_scram_maps_to_librdkafka_with_the_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")  # as a mounted secret ends, with a newline
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    settings = Settings()
    assert kafka_config("b:9093", settings=settings) == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_ssl_with_a_client_certificate_and_no_hostname_check() -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certificate_location=Path("/c.pem"),
        kafka_ssl_key_location=Path("/k.pem"),
        kafka_ssl_key_password=SECRET,  # type: ignore[arg-type]
        kafka_ssl_check_hostname=False,
    )
    config = kafka_config("b:9093", settings=settings)
    assert config["ssl.certificate.location"] == "/c.pem"
    assert config["ssl.key.location"] == "/k.pem"
    assert config["ssl.key.password"] == SECRET
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_sasl_without_a_password_names_what_is_missing() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="alice")
    with pytest.raises(SecurityError, match="KAFKA_SASL_PASSWORD"):
        kafka_config("b:9093", settings=settings)


def test_an_unreadable_secret_file_names_the_variable_never_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", f"bob:{SECRET}")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", "/nowhere/password")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "KAFKA_SASL_PASSWORD_FILE=/nowhere/password" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_faust_gets_sasl_credentials_over_tls_with_the_same_mechanism() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="alice",
        kafka_sasl_password=SECRET,  # type: ignore[arg-type]
    )
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("alice", SECRET)
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.check_hostname
    assert SECRET not in repr(credentials)


def test_faust_gets_ssl_credentials_and_none_on_plaintext() -> None:
    assert faust_credentials(Settings(_env_file=None)) is None
    ssl_only = faust_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(ssl_only, faust.SSLCredentials)


def test_a_missing_ca_file_is_one_line_naming_the_setting() -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=Path("/no/ca.pem"))
    with pytest.raises(SecurityError, match="KAFKA_SSL_"):
        faust_credentials(settings)


def test_the_registry_client_gets_basic_auth() -> None:
    settings = Settings(schema_registry_basic_auth_user_info=f"bob:{SECRET}")  # type: ignore[arg-type]
    assert registry_config("https://registry:8081", settings) == {
        "url": "https://registry:8081",
        "basic.auth.user.info": f"bob:{SECRET}",
    }
