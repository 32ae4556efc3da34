"""Links between README.md and docs/*.md lead somewhere: the file exists and, for a link to a
heading, the heading does (GitHub's anchor for it)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    found, fence = set(), False
    for line in document.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#+ ", line):
            found.add(anchor(re.sub(r"^#+ ", "", line)))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document: Path) -> None:
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, heading = link.partition("#")
        target = document.parent / path if path else document
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif heading and target.suffix == ".md" and heading not in anchors(target):
            broken.append(f"{link}: no such heading")
    assert not broken, broken
