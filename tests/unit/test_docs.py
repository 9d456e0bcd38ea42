"""The README is a front page: what pyprobe is, the two set-up commands,
a quick start per use, links to every page under docs/; the links resolve."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))


def test_readme_starts_with_the_two_commands_and_root():
    text = README.read_text()
    assert "\nmake demo   # installs what it needs, builds the lab," in text
    assert "\nmake test   # installs what it needs, runs the unit and real-kernel tests," in text
    assert "Both need root." in text
    quick = text.index("## Quick start")
    assert text.index("make demo") < quick < text.index("## Documentation")
    for use in ("Debug a host with the CLI", "Run the exporter", "The lab", "Deploy"):
        assert f"### {use}" in text[quick:]


def test_readme_links_every_page_and_stays_short():
    text = README.read_text()
    for page in PAGES:
        assert f"(docs/{page.name})" in text, page.name
    assert len(text.splitlines()) < 150


def test_relative_links_resolve():
    for f in [README, *PAGES]:
        for target in re.findall(r"\]\(([^)\s]+)\)", f.read_text()):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            assert (f.parent / target.split("#")[0]).exists(), f"{f.name}: {target}"
