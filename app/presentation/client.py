from starlette.types import Scope


def client_address(scope: Scope) -> str:
    """The address a request is limited under: the TCP peer as uvicorn reports it.

    uvicorn's ProxyHeadersMiddleware (on in `python -m app serve`) has already replaced the
    peer with the rightmost `X-Forwarded-For` address that is not one of
    `BALANCER_FORWARDED_ALLOW_IPS`, and only when the peer itself is one of them, so a
    header sent by anyone else is ignored. A Unix socket peer has no address: "".
    """
    client = scope.get("client")
    return client[0] if client else ""
