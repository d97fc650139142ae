"""The repository's citations resolve inside the repository.

Code, configs, experiments and tests cite the pages of `docs/` as `docs/<page>.md#<anchor>`,
optionally followed by more anchors of the same page (`docs/original.md#coarse-gt, #fine-gt`).
Every cited page must exist and every cited anchor must be defined in it; every relative link
inside `docs/` must resolve too. No citation of the documents that are not in the repository (the
spec's numbered sections, the first design) may remain.

Anchors of a page are
- the `id` of every explicit `<a id="..."></a>` tag, and
- the GitHub slug of every Markdown heading outside code blocks: the heading text lower-cased,
  every character that is not a letter, digit, underscore, hyphen or space removed, each space
  replaced by a hyphen; a repeated slug gets `-1`, `-2`, ... appended, as GitHub does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("loftr/", "conf/", "experiments/", "tests/", "README.md", "pyproject.toml")
# built from parts, so that this file does not match its own patterns
FORBIDDEN = ("SPEC " + "\u00a7", "DESI" + "GN")
REFERENCE = re.compile(r"docs/([\w./-]+?\.md)(?:#([\w-]+)((?:, #[\w-]+)*))?")
ANCHOR_TAG = re.compile(r"""<a\s+(?:name|id)\s*=\s*["']([^"']+)["']""")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading, counting repeats in `seen`."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def anchors(text: str) -> set[str]:
    """Explicit `<a id>` anchors and heading slugs of a Markdown page."""
    found = set(ANCHOR_TAG.findall(text))
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            title = ANCHOR_TAG.sub("", match.group(2)).replace("</a>", "")
            found.add(github_slug(title, seen))
    return found


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    return [p for p in out.split("\0") if p]


def scanned_texts() -> dict[str, str]:
    texts = {}
    for path in tracked_files():
        if not path.startswith(SCANNED) or not (ROOT / path).is_file():
            continue
        try:
            texts[path] = (ROOT / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary fixtures
            continue
    return texts


def dangling_references(texts: dict[str, str], docs: Path) -> list[str]:
    """`file:line: reference (reason)` for every docs reference that does not resolve."""
    cache: dict[str, set[str] | None] = {}
    problems = []
    for path, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in REFERENCE.finditer(line):
                page, first, more = match.groups()
                if page not in cache:
                    target = docs / page
                    cache[page] = anchors(target.read_text("utf-8")) if target.is_file() else None
                defined = cache[page]
                if defined is None:
                    problems.append(f"{path}:{number}: {match.group(0)} (no docs/{page})")
                    continue
                wanted = ([first] if first else []) + re.findall(r"#([\w-]+)", more or "")
                for anchor in wanted:
                    if anchor not in defined:
                        problems.append(f"{path}:{number}: docs/{page}#{anchor} (no such anchor)")
    return problems


def test_no_citation_of_documents_outside_the_repository():
    hits = [
        f"{path}:{number}: {line.strip()}"
        for path, text in scanned_texts().items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(pattern in line for pattern in FORBIDDEN)
    ]
    assert not hits, "cite docs/original.md or docs/differences.md instead:\n" + "\n".join(hits)


def test_every_docs_reference_resolves():
    texts = scanned_texts()
    texts.pop(THIS_FILE, None)  # its fixtures below cite pages of a temporary folder
    assert any(REFERENCE.search(text) for text in texts.values())  # the scan sees the citations
    problems = dangling_references(texts, ROOT / "docs")
    assert not problems, "\n".join(problems)


def test_links_inside_docs_resolve():
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages
    problems = []
    for page in pages:
        text = page.read_text("utf-8")
        for target in LINK.findall(text):
            if re.match(r"^[a-z][\w+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                problems.append(f"{page.name}: {target} (no such file)")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked.read_text())):
                problems.append(f"{page.name}: {target} (no such anchor)")
    assert not problems, "\n".join(problems)


def test_the_checker_finds_dangling_citations(tmp_path: Path):
    (tmp_path / "page.md").write_text(
        '# Page\n<a id="kept"></a>\n## 2.5 Coarse matching (`CoarseMatching`)\n## Notes\n'
        "## Notes\n```\n# not a heading\n```\n"
    )
    assert anchors((tmp_path / "page.md").read_text()) == {
        "page",
        "kept",
        "25-coarse-matching-coarsematching",
        "notes",
        "notes-1",
    }
    texts = {
        "ok.py": "# docs/page.md#kept, #notes-1 and docs/page.md",
        "bad.py": "# docs/page.md#gone\n# docs/page.md#kept, #not-a-heading\n# docs/none.md#x",
    }
    assert dangling_references(texts, tmp_path) == [
        "bad.py:1: docs/page.md#gone (no such anchor)",
        "bad.py:2: docs/page.md#not-a-heading (no such anchor)",
        "bad.py:3: docs/none.md#x (no docs/none.md)",
    ]
