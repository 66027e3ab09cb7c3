"""Exceptions raised at dmtl's boundaries.

Every error names the offending field or input and says what was expected, so that the CLI can print a
single line without a traceback.
"""

from __future__ import annotations


class DmtlError(Exception):
    """Base class of all errors dmtl raises on bad input or configuration."""


class ConfigError(DmtlError, ValueError):
    """A configuration field is unknown, of the wrong type, or out of range."""


class TopologyError(DmtlError, ValueError):
    """A graph or mixing matrix does not have a property the caller requires."""


class DataError(DmtlError, ValueError):
    """Data are malformed: wrong shapes, non-finite values, missing or altered files."""
