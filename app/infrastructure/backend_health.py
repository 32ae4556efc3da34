from app.application.errors import StorageUnavailable
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.listener import ConfigWatcher
from app.infrastructure.redis.sequence import UNREACHABLE, RedisLeasedSequence


class PostgresHealth:
    name = "postgres"

    def __init__(self, repository: PostgresConfigRepository, watcher: ConfigWatcher) -> None:
        self._repository = repository
        self._watcher = watcher

    async def __call__(self) -> str | None:
        try:
            await self._repository.ping()
        except StorageUnavailable as error:
            return f"unreachable: {error.detail}; serving the last loaded config"
        if not self._watcher.listening:
            return "not listening for config changes; resyncing on a timer"
        return None


class RedisHealth:
    name = "redis"

    def __init__(self, sequence: RedisLeasedSequence) -> None:
        self._sequence = sequence

    async def __call__(self) -> str | None:
        try:
            await self._sequence.ping()
        except UNREACHABLE as error:
            return f"unreachable ({type(error).__name__}): counting locally"
        if self._sequence.degraded:
            return "leases failing: counting locally"
        return None
