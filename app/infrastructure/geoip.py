"""Country of an IP address: from a MaxMind DB file when one is configured (GeoLite2-Country,
DB-IP lite; operators download and refresh it), else from the RIR data `iptocc` ships."""

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import maxminddb
import structlog
from iptocc import country_code

log = structlog.get_logger(__name__)


def _open_private_copy(path: Path) -> maxminddb.Reader:
    """Map a private copy of the file: a download script that rewrites the file in place
    would otherwise change the bytes under the serving reader's memory map."""
    with tempfile.NamedTemporaryFile(prefix="geoip-", suffix=".mmdb") as copy:
        with path.open("rb") as source:
            shutil.copyfileobj(source, copy)
        copy.flush()
        return maxminddb.open_database(copy.name, maxminddb.MODE_MMAP_EXT)


class BundledCountries:
    """RIR delegation data compiled into the `iptocc` wheel: no file, no network."""

    source = "iptocc"

    def __call__(self, address: str) -> str | None:
        return country_code(address)


class MaxMindCountries:
    """A MaxMind DB file, reopened when the file on disk changes (checked in the background,
    never on a lookup). A file that cannot be read keeps the previous one serving."""

    def __init__(self, path: Path, *, check_seconds: float = 5.0) -> None:
        self._path = path
        self._check_seconds = check_seconds
        self._stamp = self._file_stamp()
        self._reader = _open_private_copy(path)
        self._task: asyncio.Task[None] | None = None
        self.source = f"maxmind:{path}"
        # Called after a reload: whoever caches answers (the region matcher) drops them.
        self.on_reload: list[Callable[[], None]] = []

    def __call__(self, address: str) -> str | None:
        record = self._reader.get(address)
        if not isinstance(record, dict):
            return None
        country = record.get("country") or record.get("registered_country")
        if not isinstance(country, dict):
            return None
        code = country.get("iso_code")
        return code if isinstance(code, str) else None

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = os.stat(self._path)
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def reload_if_changed(self) -> bool:
        """Reopen the file if it changed since it was opened; True when it was reopened."""
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            reader = _open_private_copy(self._path)
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as error:
            log.warning("geoip_reload_failed", path=str(self._path), error=str(error))
            return False
        previous, self._reader, self._stamp = self._reader, reader, stamp
        previous.close()
        for listener in self.on_reload:
            listener()
        log.info("geoip_reloaded", path=str(self._path), build_epoch=reader.metadata().build_epoch)
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="geoip-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._reader.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            self.reload_if_changed()
