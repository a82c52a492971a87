"""Errors the runtime reports to its installation and its partner."""


class RuntimeJobError(Exception):
    """A failure with a message fit for a person; the job fails with this text."""


class ConfigError(RuntimeJobError):
    """The config file is missing a field or has a bad value; names the field."""


class DataError(RuntimeJobError):
    """The input data is unusable (empty, duplicate ids, missing column...)."""


class PeerError(RuntimeJobError):
    """The partner's runtime disconnected, disagreed on protocol, or failed."""
