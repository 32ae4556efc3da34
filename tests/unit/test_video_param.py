import pytest

from app.domain.errors import InvalidVideoUrl
from app.presentation.http.redirect import video_param


@pytest.mark.parametrize(
    ("query", "video"),
    [
        (b"video=http://s1.origin-cluster/v.m3u8", "http://s1.origin-cluster/v.m3u8"),
        (
            b"video=http%3A%2F%2Fs1.origin-cluster%2Fv.m3u8%3Ftoken%3Dabc%26exp%3D1&x=1",
            "http://s1.origin-cluster/v.m3u8?token=abc&exp=1",
        ),
        (
            b"video=http://s1.origin-cluster/v.m3u8?token=abc&exp=1",
            "http://s1.origin-cluster/v.m3u8?token=abc&exp=1",
        ),
        (b"x=1&video=http://s1.origin-cluster/v.m3u8&y=2", "http://s1.origin-cluster/v.m3u8"),
        (
            b"video=http://s1.origin-cluster/my%2520film.m3u8",
            "http://s1.origin-cluster/my%20film.m3u8",
        ),
        (b"video=http://s1.origin-cluster/a+b.m3u8", "http://s1.origin-cluster/a+b.m3u8"),
        (b"", ""),
        (b"videos=http://s1.origin-cluster/v.m3u8", ""),
    ],
)
def test_video_parameter_is_found_and_decoded_once(query: bytes, video: str) -> None:
    assert video_param(query) == video


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(InvalidVideoUrl) as error:
        video_param(b"video=http://s1.origin-cluster/%ff.m3u8")
    assert error.value.code == "invalid-characters"
