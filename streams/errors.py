"""The one exception hierarchy: every failure the system raises on purpose is an InventoryError."""

from __future__ import annotations


class InventoryError(Exception):
    """Root of every error raised on purpose by this project."""


class InvalidEvent(InventoryError):
    """Input that does not satisfy the contract; `reason` is written for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSettings(InventoryError):
    """A setting from the environment that cannot be used; the message names the variable."""


class InvalidCatalog(InventoryError):
    """A catalog file or catalog change that cannot be applied."""


class EncodingError(InventoryError):
    """Bytes that cannot be decoded, or a record that cannot be encoded, with our schemas."""


class BrokerError(InventoryError):
    """The Kafka cluster (embedded or configured) could not be reached or started."""


class CatalogUnderWay(BrokerError):
    """The latest record on inventory.catalog is a catalog's part: its manifest is still to come."""


class ClusterRefused(BrokerError):
    """The cluster rejected our credentials, or we rejected its certificate: retrying won't help."""


class SecurityError(InventoryError):
    """Security settings that cannot make a connection (a missing file, a key that won't load)."""


class DeliveryFailed(BrokerError):
    """The broker did not acknowledge every record; nothing may be reported as written."""


class Backpressure(BrokerError):
    """The producer's buffer stayed full past the deadline: the caller should retry later."""
