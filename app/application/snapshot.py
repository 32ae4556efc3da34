from app.application.errors import ConfigNotLoaded
from app.domain.config import ConfigVersion, Router


class ConfigSnapshot:
    """The configuration this worker serves, swapped whole when a newer version arrives."""

    __slots__ = ("_router",)

    def __init__(self) -> None:
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        router = self._router
        if router is None:
            raise ConfigNotLoaded("The configuration has not been loaded yet.")
        return router

    @property
    def loaded(self) -> bool:
        return self._router is not None

    @property
    def version(self) -> ConfigVersion:
        return self.router.version

    def offer(self, version: ConfigVersion) -> bool:
        """Serve `version` if it is newer than the current one; True when it was taken."""
        current = self._router
        if current is not None and current.version.version >= version.version:
            return False
        self._router = Router(version)
        return True
