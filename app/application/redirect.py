from app.application.ports import SequenceSource
from app.application.snapshot import ConfigSnapshot
from app.domain.config import Redirect


class RedirectVideo:
    """Decide where a player fetches a video: parse, validate, take a sequence number, route.

    Unlike the other use cases this one is synchronous on purpose: it runs for every viewer
    request and must never wait for I/O, which a plain function makes impossible to break.
    """

    __slots__ = ("_next_number", "_snapshot")

    def __init__(self, snapshot: ConfigSnapshot, sequence: SequenceSource) -> None:
        self._snapshot = snapshot
        self._next_number = sequence.next

    def __call__(self, raw_video: str) -> Redirect:
        return self._snapshot.router.redirect(raw_video, self._next_number)
