from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.application.config import ConfigChange
from app.domain.config import ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.split import Split


class SplitBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cdn_weight: int = Field(ge=0, examples=[0])
    origin_weight: int = Field(ge=0, examples=[1])


class ConfigPatch(BaseModel):
    """Fields to change; the others keep their values. Nothing is written if any is invalid."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"cdn_host": "cdn2.example.com", "comment": "move to the new CDN"},
                {"cdn_weight": 3, "origin_weight": 2},
                {"origin_every": 10},
            ]
        },
    )

    cdn_host: str | None = Field(
        None, description="CDN host, optionally with scheme (http by default) and port."
    )
    cdn_weight: int | None = Field(None, description="CDN share of the split.")
    origin_weight: int | None = Field(None, description="Origin share of the split.")
    origin_every: int | None = Field(
        None, description="Shorthand: every N-th request to the origin (N-1:1)."
    )
    redirect_status: int | None = Field(None, description="301, 302, 307 or 308.")
    origin_domains: list[str] | None = Field(
        None, description="Accepted video hosts are <server>.<one of these>."
    )
    server_rules: dict[str, SplitBody] | None = Field(
        None, description="Per origin server splits that replace the global one."
    )
    comment: str | None = Field(None, description="Why; kept in the history.")

    def to_change(self) -> ConfigChange:
        values = {name: getattr(self, name) for name in self.model_fields_set}
        for name, value in values.items():
            if value is None and name != "comment":
                raise InvalidConfig(name, "must not be null; leave the field out to keep it")
        if not set(values) - {"comment"}:
            raise InvalidConfig("body", "name at least one field to change")
        if "origin_domains" in values:
            values["origin_domains"] = tuple(values["origin_domains"])
        if "server_rules" in values:
            values["server_rules"] = {
                server: Split(rule.cdn_weight, rule.origin_weight)
                for server, rule in values["server_rules"].items()
            }
        return ConfigChange(**values)


class ConfigBody(BaseModel):
    version: int
    cdn_host: str
    cdn_weight: int
    origin_weight: int
    redirect_status: int
    origin_domains: list[str]
    server_rules: dict[str, SplitBody]
    comment: str | None
    created_at: datetime

    @classmethod
    def of(cls, stored: ConfigVersion) -> "ConfigBody":
        config = stored.config
        return cls(
            version=stored.version,
            cdn_host=config.cdn_host,
            cdn_weight=config.split.cdn_weight,
            origin_weight=config.split.origin_weight,
            redirect_status=config.redirect_status,
            origin_domains=list(config.origin_domains),
            server_rules={
                server: SplitBody(cdn_weight=rule.cdn_weight, origin_weight=rule.origin_weight)
                for server, rule in config.server_rules.items()
            },
            comment=stored.comment,
            created_at=stored.created_at,
        )


class ConfigHistoryPage(BaseModel):
    items: list[ConfigBody]
    next_before: int | None = Field(
        description="Pass as `before` for the next page; null on the last page."
    )


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    comment: str | None = Field(None, max_length=1000, description="Why; kept in the history.")


class BalanceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"video": "http://s1.origin-cluster/video/1488/x.m3u8"}]},
    )

    video: str = Field(description="The video URL on an origin server.")


class BalanceDecision(BaseModel):
    redirect_url: str
    target: str = Field(description="`cdn` or `origin`.")
    server: str = Field(description="The origin server label, e.g. `s1`.")
    config_version: int


PROBLEM_RESPONSE: dict[str, Any] = {
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
