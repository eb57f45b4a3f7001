"""Every link between the repository's pages, and every page section the code cites, exists.

Links are Markdown's ``[text](path#anchor)`` with a relative path; anchors are the ones GitHub makes
from a page's headings. The code cites pages as ``docs/<page>.md#<anchor>``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITATION = re.compile(r"\b(docs/[\w-]+\.md)(?:#([\w-]+))?")
CODE = ("ruthgen", "ruthstack", "sidecar", "templates", "proto", "tests", "benchmarks", "scripts")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            found.add(slug(m.group(1)))
    return found


def pages() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts and "node_modules" not in p.parts)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page.relative_to(root)}: {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{page.relative_to(root)}: {target}: no such section")
    return broken


def test_slugs_are_githubs():
    assert slug("Frames in shared memory (same host)") == "frames-in-shared-memory-same-host"
    assert slug("Monitoring: Prometheus, alerts, Grafana") == "monitoring-prometheus-alerts-grafana"
    assert slug("From Python (`sidecar.client`)") == "from-python-sidecarclient"


def test_every_relative_link_between_pages_resolves():
    broken = [line for page in pages() for line in broken_links(page)]
    assert not broken, "\n".join(broken)


def test_a_broken_link_is_found(tmp_path):
    page = "# Top\n\n## Two words\n\n[ok](a.md#two-words) [bad](a.md#three) [gone](b.md)\n"
    (tmp_path / "a.md").write_text(page)
    found = broken_links(tmp_path / "a.md", root=tmp_path)
    assert found == ["a.md: a.md#three: no such section", "a.md: b.md: no such file"]


def test_every_page_section_the_code_cites_exists():
    broken = []
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in {".py", ".j2", ".proto", ".md", ".sh"} or not path.is_file():
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                for page, anchor in CITATION.findall(line):
                    cited = ROOT / page
                    if not cited.exists() or (anchor and anchor not in anchors(cited)):
                        broken.append(f"{path.relative_to(ROOT)}:{number}: {page}#{anchor}")
    assert not broken, "\n".join(broken)


def test_every_test_the_pages_cite_exists():
    cited = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
    missing = []
    for page in pages():
        for path, name in cited.findall(page.read_text()):
            test_file = ROOT / path
            if not test_file.exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
            elif name and not re.search(rf"def {name}\(", test_file.read_text()):
                missing.append(f"{page.relative_to(ROOT)}: {path}::{name}")
    assert not missing, "\n".join(missing)
