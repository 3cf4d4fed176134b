"""The front door and the manual: every relative link of README.md and docs/*.md points at a file that exists
(and at a heading that exists, when it names one); product files carry no process notes."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    found: set[str] = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        found.add(slug)
    return found


def relative_links(page: Path) -> list[tuple[str, str]]:
    """(target path, anchor) of every link on the page that is not a URL."""
    links = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        links.append((path, anchor))
    return links


def test_every_relative_link_resolves():
    broken = []
    checked = 0
    for page in PAGES:
        for path, anchor in relative_links(page):
            checked += 1
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {path} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {path}#{anchor} names no heading of {dest.name}")
    assert checked > 20, "the link checker found almost no links: is it still reading the pages?"
    assert not broken, "\n".join(broken)


def test_the_checker_sees_broken_links(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A title\n[x](missing.md) [y](p.md#a-title) [z](https://example.org) `[q](not-a-link.md)`\n")
    assert relative_links(page) == [("missing.md", ""), ("p.md", "a-title")]
    assert "a-title" in _anchors(page)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220, "README.md is the front door: move manual text into docs/"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated measurements belong in docs/performance.md"


def test_no_process_notes_in_product_files():
    """No 'issue N' / 'session N' in code, configs, README or docs: they speak of the product only."""
    files = [*PAGES, *ROOT.glob("configs/**/*.yaml"), ROOT / "pyproject.toml"]
    for package in ("benchmark", "detectors", "protocols", "leaderboard", "common"):
        files += sorted((ROOT / package).rglob("*.py"))
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\b(?:issue|session)[ -]\d+", line, flags=re.I)]
    assert not hits, "\n".join(hits)


def test_source_paths_named_in_the_pages_exist():
    """A file of the repository named in backticks (`protocols/engine.py`, `tests/e2e/test_x.py::name`) exists."""
    pattern = re.compile(r"`((?:benchmark|detectors|protocols|leaderboard|common|configs|docs|tests|scripts)/"
                         r"[\w/.-]+\.(?:py|md|yaml|json|sh))(?:::\w+)?`")
    missing = [f"{page.relative_to(ROOT)}: {rel}" for page in PAGES
               for rel in pattern.findall(page.read_text(encoding="utf-8"))
               if not re.search(r"\b[A-Z]{3,}\b", rel) and not (ROOT / rel).exists()]  # NAME: a placeholder
    assert not missing, "\n".join(missing)
