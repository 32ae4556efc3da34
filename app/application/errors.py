from app.domain.errors import BalancerError


class VersionConflict(BalancerError):
    """Another write created the version this one meant to create."""

    code = "version-conflict"


class PreconditionFailed(BalancerError):
    """The client's `If-Match` names a version that is no longer the active one."""

    code = "precondition-failed"


class TooManyConflicts(BalancerError):
    """Concurrent writers kept winning; the client may simply retry."""

    code = "too-many-conflicts"


class VersionNotFound(BalancerError):
    code = "version-not-found"


class StorageUnavailable(BalancerError):
    """PostgreSQL could not be reached or did not answer in time."""

    code = "storage-unavailable"


class ConfigNotLoaded(BalancerError):
    """No configuration has been loaded yet, so nothing can be served."""

    code = "config-not-loaded"
