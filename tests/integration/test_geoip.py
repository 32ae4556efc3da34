"""Country lookups from a real MaxMind DB file written here, and from the bundled data."""

from pathlib import Path

from app.infrastructure.geoip import BundledCountries, MaxMindCountries
from tests.support.geoip import write_database


def test_maxmind_file_answers_countries_for_ipv4_and_ipv6(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    write_database(path, {"DE": ["85.214.0.0/16", "2a01:4f8::/32"], "FR": ["90.0.0.0/8"]})
    countries = MaxMindCountries(path)
    assert countries("85.214.132.117") == "DE"
    assert countries("2a01:4f8:1::5") == "DE"
    assert countries("90.1.2.3") == "FR"
    assert countries("8.8.8.8") is None


def test_maxmind_file_is_reopened_when_replaced_and_listeners_hear_of_it(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    write_database(path, {"DE": ["85.214.0.0/16"]})
    countries = MaxMindCountries(path)
    heard: list[str] = []
    countries.on_reload.append(lambda: heard.append("reloaded"))
    assert countries.reload_if_changed() is False
    write_database(path, {"FR": ["85.214.0.0/16"]})
    assert countries.reload_if_changed() is True
    assert countries("85.214.132.117") == "FR"
    assert heard == ["reloaded"]


def test_unreadable_replacement_keeps_the_previous_file_serving(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    write_database(path, {"DE": ["85.214.0.0/16"]})
    countries = MaxMindCountries(path)
    path.write_bytes(b"not a maxmind database")
    assert countries.reload_if_changed() is False
    assert countries("85.214.132.117") == "DE"


def test_bundled_data_knows_well_known_blocks() -> None:
    countries = BundledCountries()
    assert countries("8.8.8.8") == "US"
    assert countries("85.214.132.117") == "DE"
    assert countries("2a00:1450:4001::1") == "IE"
    assert countries("10.0.0.1") is None
