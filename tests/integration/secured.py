"""An embedded Apache Kafka with an SSL listener and a SASL_SSL one (PLAIN, SCRAM-SHA-256/512), a
CA and a broker certificate made for it, and the environment a client needs for each."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from streams.runtime.broker import EmbeddedKafka
from streams.settings import Settings

PLAIN_USER = "alice"
SCRAM_USER = "carol"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA, its certificate written to `directory/name.pem`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_keystore(
    path: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], password: str
) -> None:
    """A PKCS12 keystore (what Kafka 2.3 reads) with a broker certificate for 127.0.0.1."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(password.encode())
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"broker", key, cert, [ca_cert], encryption)
    )


@dataclass
class SecuredKafka:
    broker: EmbeddedKafka
    ca: Path  # the CA that signed the broker's certificate
    other_ca: Path  # a CA the broker's certificate does not come from
    plain_password: str
    scram_password: str

    def env(
        self, protocol: str, mechanism: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        """The settings a client of this broker needs, as environment variables."""
        listener = self.broker.listener("SSL" if protocol == "SSL" else "SASL_SSL")
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": listener,
            "KAFKA_SECURITY_PROTOCOL": protocol,
            "KAFKA_SSL_CA_LOCATION": str(self.ca),
            "KAFKA_TIMEOUT_SECONDS": "10",
        }
        if mechanism is not None:
            plain = mechanism == "PLAIN"
            env["KAFKA_SASL_MECHANISM"] = mechanism
            env["KAFKA_SASL_USERNAME"] = PLAIN_USER if plain else SCRAM_USER
            own = self.plain_password if plain else self.scram_password
            env["KAFKA_SASL_PASSWORD"] = own if password is None else password
        return env

    @property
    def secrets(self) -> list[str]:
        return [self.plain_password, self.scram_password]


def start_secured_kafka(directory: Path) -> SecuredKafka:
    """The broker, started; the caller stops it."""
    store_password = secrets.token_urlsafe(12)
    plain_password = "plain-" + secrets.token_urlsafe(12)
    scram_password = "scram-" + secrets.token_urlsafe(12)
    ca = make_ca(directory, "test-ca")
    make_ca(directory, "other-ca")
    make_keystore(directory / "broker.p12", ca, store_password)
    scram_module = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    properties = {
        "ssl.keystore.location": str(directory / "broker.p12"),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": store_password,
        "ssl.key.password": store_password,
        "ssl.client.auth": "none",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{PLAIN_USER}="{plain_password}";'
        ),
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram_module,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram_module,
    }
    broker = EmbeddedKafka(
        directory / "kafka",
        home=Settings().embedded_kafka_home,
        listeners={"SSL": "SSL", "SASL_SSL": "SASL_SSL"},
        properties=properties,
    )
    broker.start()
    try:
        broker.add_scram_user(SCRAM_USER, scram_password)
    except BaseException:
        broker.stop()
        raise
    ca, other_ca = directory / "test-ca.pem", directory / "other-ca.pem"
    return SecuredKafka(broker, ca, other_ca, plain_password, scram_password)
