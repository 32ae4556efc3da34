from app.application.errors import PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_version(header: str | None) -> int | None:
    """The version an `If-Match` header insists on; None for no header or `*`."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionFailed(f"If-Match {header!r} names no configuration version.")
    return int(tag)
