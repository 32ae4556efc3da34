"""MaxMind DB files written for a test."""

import os
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def write_database(path: Path, countries: dict[str, list[str]]) -> None:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for code, blocks in countries.items():
        writer.insert_network(IPSet(blocks), {"country": {"iso_code": code}})
    scratch = path.with_suffix(".tmp")
    writer.to_db_file(str(scratch))
    os.replace(scratch, path)  # as operators' download scripts do: never a half-written file
