import pytest

from app.presentation.api.etag import NO_VERSION, etag, if_match_version


@pytest.mark.parametrize(
    ("header", "version"),
    [
        (None, None),
        ("*", None),
        (' "3" ', 3),
        ('W/"12"', 12),
        ("7", 7),
        ('"2147483647"', 2**31 - 1),
    ],
)
def test_if_match_names_a_version_or_nothing(header: str | None, version: int | None) -> None:
    assert if_match_version(header) == version


@pytest.mark.parametrize(
    "header",
    [
        '"\N{SUPERSCRIPT TWO}"',
        '"\N{ARABIC-INDIC DIGIT EIGHT}"',
        '"\N{FULLWIDTH DIGIT EIGHT}"',
        '"' + "9" * 5000 + '"',
        '"2147483648"',
        '"-1"',
        '"1", "2"',
        '"abc"',
        '""',
    ],
)
def test_if_match_that_names_no_version_insists_on_one_that_is_never_active(header: str) -> None:
    assert if_match_version(header) == NO_VERSION


def test_etag_quotes_the_version() -> None:
    assert etag(4) == '"4"'
