"""The cityops error hierarchy: library errors are translated into these once, at the boundary."""

from __future__ import annotations


class CityopsError(Exception):
    """Base class of every error cityops raises on purpose."""


class ConfigError(CityopsError):
    """A setting or the config file is invalid; the message names the field."""


class CatalogError(CityopsError):
    """A value does not satisfy the device catalog."""


class ValidationError(CatalogError):
    """A record failed validation; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DatabaseError(CityopsError):
    """The database is unreachable or refused an operation."""


class MigrationError(DatabaseError):
    """A schema migration could not be applied or does not match what was applied before."""


class ImportFileError(CityopsError):
    """A registry import file cannot be read at all (wrong format, missing header)."""
