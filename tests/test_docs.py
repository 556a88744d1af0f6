"""The documentation: it cites only what the repository carries."""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EQUATIONS = ROOT / "docs" / "equations.md"
EQUATION_LINE = r"^    \S.*\((\d+\.\d+)\)\s*$"    # an indented equation, its number at the end


def _sources():
    """README, docs, Python sources, C sources, examples and benchmarks."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for sub, pattern in (("src", "*.py"), ("src", "*.pyx"), ("src", "*.pyi"), ("csrc", "*.[ch]"),
                         ("examples", "*.py"), ("bench", "*.py"), ("bench", "*.md")):
        files += sorted((ROOT / sub).rglob(pattern))
    return [f for f in files if f.is_file()]


def test_no_citation_of_files_outside_the_repository():
    bad = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
           for f in _sources() for i, line in enumerate(f.read_text().splitlines(), 1)
           if re.search(r"shared/spec|/spec/equations|/work/shared", line)]
    assert not bad, "citations of files the repository does not carry:\n" + "\n".join(bad)


def _sections_and_equations():
    text = EQUATIONS.read_text()
    sections = set(re.findall(r"^#{2,3} (\d+[a-z]?)\.", text, flags=re.M))
    equations = set(re.findall(EQUATION_LINE, text, flags=re.M))
    return sections, equations


def test_equations_document_numbers_its_sections_and_equations():
    sections, equations = _sections_and_equations()
    assert {"1", "2", "3a", "3b", "3c", "4"} <= sections
    # numbered consecutively within each section, none missing or repeated
    text = EQUATIONS.read_text()
    numbers = [n.split(".") for n in re.findall(EQUATION_LINE, text, flags=re.M)]
    assert len(numbers) == len(equations), "an equation number is used twice"
    by_section = {}
    for s, k in numbers:
        by_section.setdefault(int(s), []).append(int(k))
    for s, ks in by_section.items():
        assert ks == list(range(1, len(ks) + 1)), f"equations of §{s} are numbered {ks}"


def test_cited_sections_and_equations_exist():
    """Every 'docs/equations.md §N' and '(N.M)' cited next to it names something in the document."""
    sections, equations = _sections_and_equations()
    missing = []
    for f in _sources():
        if f == EQUATIONS:
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "equations.md" not in line:
                continue
            for sec in re.findall(r"§(\d+[a-z]?)", line):
                if sec not in sections and sec.rstrip("abc") not in sections:
                    missing.append(f"{f.relative_to(ROOT)}:{i}: §{sec}")
            for eq in re.findall(r"\((\d+\.\d+)\)", line):
                if eq not in equations:
                    missing.append(f"{f.relative_to(ROOT)}:{i}: ({eq})")
    assert not missing, "citations of docs/equations.md that name nothing there:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", ["README.md", "src/fusedrnn/__init__.py", "csrc/fusedrnn.h"])
def test_entry_points_link_the_equations(path):
    assert "docs/equations.md" in (ROOT / path).read_text()
