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
