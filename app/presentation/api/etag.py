from app.domain.syntax import parse_number

# Versions are PostgreSQL integers.
MAX_VERSION = 2**31 - 1


def etag(version: int) -> str:
    return f'"{version}"'


# What an `If-Match` that names no version insists on: a version that is never active. The
# write then fails its precondition (412) only after the request's own checks, as RFC 9110
# (13.2.2) orders them: a bad server label is 422 whatever If-Match says.
NO_VERSION = 0


def if_match_version(header: str | None) -> int | None:
    """The version an `If-Match` header insists on; None for no header or `*`."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    version = parse_number(tag, MAX_VERSION)
    return NO_VERSION if version is None else version
