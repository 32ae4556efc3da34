from app.application.errors import PreconditionFailed
from app.domain.syntax import parse_number

# Versions are PostgreSQL integers.
MAX_VERSION = 2**31 - 1


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_version(header: str | None) -> int | None:
    """The version an `If-Match` header insists on; None for no header or `*`."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    version = parse_number(tag, MAX_VERSION)
    if version is None:
        raise PreconditionFailed(f"If-Match {header[:100]!r} names no configuration version.")
    return version
