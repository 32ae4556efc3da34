from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What an identity may do with the admin API; each role may do what the ones before
    it may: `reader` reads, `operator` also changes the configuration and limits, `admin`
    also what may later manage access."""

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def includes(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.READER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def highest_role(names: Iterable[str]) -> Role | None:
    """The strongest role among `names` (the values of a token's roles claim); names that
    are not a role are ignored."""
    roles = [Role(name) for name in names if name in _RANKS]
    return max(roles, key=lambda role: role.rank, default=None)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent an admin request: a static token's name, or a JWT's `sub` and `iss`."""

    name: str
    role: Role | None
    issuer: str | None = None

    def may(self, needed: Role) -> bool:
        return self.role is not None and self.role.includes(needed)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, and from where, as the history records it."""

    name: str
    issuer: str | None = None
    address: str | None = None
    # What the identity held when it acted; not part of the record.
    role: Role | None = None

    @classmethod
    def of(cls, identity: Identity, address: str | None) -> "Actor":
        return cls(identity.name, identity.issuer, address, identity.role)

    @property
    def label(self) -> str:
        """The actor as one word for the logs: `alice`, or `sub@issuer` for a JWT."""
        return self.name if self.issuer is None else f"{self.name}@{self.issuer}"


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A configured bearer token, with the name the logs and the history give its holder."""

    name: str
    role: Role
    secret: str
