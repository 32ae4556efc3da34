import pytest

from app.domain.errors import InvalidVideoUrl
from app.presentation.edge.redirect import video_param


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
        (b"video=", ""),
        (b"video=&video=", ""),
    ],
)
def test_video_parameter_is_found_and_decoded_once(query: bytes, video: str) -> None:
    assert video_param(query) == video


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(InvalidVideoUrl) as error:
        video_param(b"video=http://s1.origin-cluster/%ff.m3u8")
    assert error.value.code == "invalid-characters"


@pytest.mark.parametrize(
    ("query", "video"),
    [
        (b"video=http://s1.origin-cluster/a.m3u8&video=http://s2.origin-cluster/b.m3u8", "a"),
        (b"video=&video=http://s1.origin-cluster/a.m3u8&video=http://evil.example/b", "a"),
        (b"x=1&video=&y=2&video=http://s1.origin-cluster/a.m3u8", "a"),
        (b"video=http%3A%2F%2Fs1.origin-cluster%2Fa.m3u8&video=http://evil.example/b", "a"),
    ],
)
def test_the_first_non_empty_video_parameter_wins(query: bytes, video: str) -> None:
    assert video_param(query) == f"http://s1.origin-cluster/{video}.m3u8"


def test_a_raw_question_mark_after_an_encoded_url_stays_out_of_it() -> None:
    query = b"video=http%3A%2F%2Fs1.origin-cluster%2Fv.m3u8%3Ft%3D1&utm=a?b/../../x&exp=2"
    assert video_param(query) == "http://s1.origin-cluster/v.m3u8?t=1"


def test_an_unencoded_url_with_its_own_query_keeps_every_later_parameter() -> None:
    query = b"x=1&video=http://s1.origin-cluster/v.m3u8?token=a&exp=1&video=other"
    assert video_param(query) == "http://s1.origin-cluster/v.m3u8?token=a&exp=1&video=other"
