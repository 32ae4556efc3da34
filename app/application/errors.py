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


class ServerRuleNotFound(BalancerError):
    code = "server-rule-not-found"


class StorageUnavailable(BalancerError):
    """PostgreSQL could not be reached or did not answer in time."""

    code = "storage-unavailable"


class ConfigNotLoaded(BalancerError):
    """No configuration has been loaded yet, so nothing can be served."""

    code = "config-not-loaded"


class StorageRejected(BalancerError):
    """PostgreSQL refused a value (a data or constraint error): the request must change."""

    code = "storage-rejected"


class StorageConflict(BalancerError):
    """PostgreSQL refused the change because of a concurrent one; the same request may pass."""

    code = "storage-conflict"


class StorageFailed(BalancerError):
    """PostgreSQL failed in a way no client can fix; the cause is logged, not answered."""

    code = "storage-failed"


class InvalidToken(BalancerError):
    """A bearer JWT that does not prove who sent it: its reason is for the log only."""

    code = "invalid-token"
