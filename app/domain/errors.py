class BalancerError(Exception):
    """Base of every error reported to a client; `code` is stable and machine-readable."""

    code = "balancer-error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidVideoUrl(BalancerError):
    """The `video` a player asked for is not a URL on one of our origin servers."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class InvalidConfig(BalancerError):
    """A configuration that could not serve traffic; `field` names the culprit."""

    code = "invalid-config"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class NoHealthyTarget(BalancerError):
    """Nothing that may serve this request is up: `no-healthy-cdn` when the CDN pool is down
    and origin fallback is off, `no-healthy-target` for a server an admin took down."""

    def __init__(self, code: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.code = code
        self.retry_after = retry_after
