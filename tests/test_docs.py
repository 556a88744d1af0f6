"""The documentation: it cites only what the repository carries."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

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


# ------------------------------------------------------------------------------------------
# Every Python code block of README.md and docs/*.md runs as written
# ------------------------------------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK_TIMEOUT = 600          # seconds; the blocks take a few seconds each on an idle machine


def code_blocks(path: pathlib.Path, language: str = "python"):
    """(line number, code) of every ```language fenced block of a Markdown file."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    start = None
    for i, line in enumerate(lines):
        fence = line.strip()
        if start is None and fence == "```" + language:
            start = i + 1
        elif start is not None and fence == "```":
            blocks.append((start, "\n".join(lines[start:i]) + "\n"))
            start = None
    assert start is None, f"{path.name}: a code block opened at line {start} is not closed"
    return blocks


PYTHON_BLOCKS = [pytest.param(path, line, code, id=f"{path.name}:{line}")
                 for path in DOCS for line, code in code_blocks(path)]


def test_the_docs_have_python_blocks():
    assert len(PYTHON_BLOCKS) >= 10


@pytest.mark.parametrize("path, line, code", PYTHON_BLOCKS)
def test_code_block_runs_as_written(path, line, code, tmp_path):
    """Each block alone, as a script in an empty temporary directory (files it writes stay
    there), in a fresh interpreter, with the installed package."""
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert out.returncode == 0, (f"{path.name}, the block at line {line} failed:\n{code}\n"
                                 f"--- stderr ---\n{out.stderr[-4000:]}")


# ------------------------------------------------------------------------------------------
# The docs speak to users, the set-up commands are what CI runs, the extras exist
# ------------------------------------------------------------------------------------------

def test_the_docs_do_not_talk_about_development():
    pattern = re.compile(r"\bissue \d+|\bthe lead\b|targets? (met|checks?)\b|\bthis round\b|"
                         r"\brounds? of (work|development)\b|of the issue's", re.I)
    bad = [f"{p.name}:{i}: {line.strip()}" for p in DOCS
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if pattern.search(line)]
    assert not bad, "\n".join(bad)


def _setup_commands():
    """The README's set-up block: one line installs and runs the demo, one runs the tests."""
    readme = ROOT / "README.md"
    block = code_blocks(readme, "bash")[0][1]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    return [[c.strip() for c in line.split("&&")] for line in lines]


def test_readme_setup_runs_the_demo_and_the_tests():
    main, tests = _setup_commands()
    assert main == ["pip install .", "python -m fusedrnn.demo"]
    assert tests == ['pip install ".[test]"', "python -m pytest"]


def test_ci_runs_the_readme_test_command():
    """.ci/run installs the test extras and runs pytest as the README says (options may follow)."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if not line.lstrip().startswith("#")]
    for command in _setup_commands()[1]:
        assert any(line == command or line.startswith(command + " ") for line in ci), command


def _extras():
    tomllib = pytest.importorskip("tomllib")          # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_user_extras_exist_and_all_is_their_union():
    extras = _extras()
    for name in ("torch", "onnx", "examples", "keras", "all", "test"):
        assert name in extras, name
    assert {_name(r) for r in extras["torch"]} == {"torch"}
    assert {_name(r) for r in extras["onnx"]} == {"onnx", "onnxruntime"}
    assert set(extras["all"]) == (set(extras["torch"]) | set(extras["onnx"]) | set(extras["examples"])
                                  | set(extras["keras"]))
    # the users' torch is the one the tests run
    torch_pins = {r for r in extras["test"] if _name(r) == "torch"}
    assert torch_pins == set(extras["torch"]) == {"torch==2.13.0"}


def test_extras_named_in_the_docs_exist_and_install_what_the_readme_says():
    extras = _extras()
    for p in DOCS:
        for name in re.findall(r"""(?:\.|fusedrnn)\[([a-z,]+)\]""", p.read_text(encoding="utf-8")):
            for extra in name.split(","):
                assert extra in extras, f"{p.name} names the extra [{extra}], pyproject has none"
    # the README's table of extras: | `pip install ".[x]"` | `req`, `req` | ... |
    rows = re.findall(r'^\| `pip install "\.\[(\w+)\]"` \| ([^|]*) \|', (ROOT / "README.md").read_text(),
                      flags=re.M)
    assert {x for x, _ in rows} >= {"torch", "onnx", "examples", "keras", "all"}
    for extra, installs in rows:
        if extra != "all":
            assert set(re.findall(r"`([^`]+)`", installs)) == set(extras[extra]), extra


NEEDS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "matplotlib": "examples",
         "keras": "keras"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_blocks_that_need_an_extra_say_so(path):
    """A block importing torch, onnx, matplotlib or keras has the extra named in its section."""
    import ast
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    fenced, headings = False, []
    for i, raw in enumerate(lines):
        fenced ^= raw.startswith("```")
        if not fenced and raw.startswith("#"):
            headings.append(i)
    for line, code in code_blocks(path):
        modules = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module.split(".")[0])
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "fr" and node.attr in ("torch", "onnx"):
                modules.add(node.attr)
        if "fusedrnn" in modules and "frt" in code:
            modules.add("torch")
        heading = max((i for i in headings if i < line), default=0)
        section = "\n".join(lines[heading:line]) + code
        for module in modules & set(NEEDS):
            assert f"[{NEEDS[module]}]" in section, \
                f"{path.name}:{line} imports {module}; its section does not name the [{NEEDS[module]}] extra"


def test_equation_numbers_in_the_oracle_and_kernel_comments_exist():
    """The oracle's '# (2.13)' comments and the kernel's '/* ... (2.13) */' name equations that exist."""
    _, equations = _sections_and_equations()
    files = [ROOT / "src" / "fusedrnn" / "reference.py", *sorted((ROOT / "csrc").glob("*.[ch]"))]
    missing, cited = [], 0
    for f in files:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            comment = line.split("#", 1)[1] if f.suffix == ".py" and "#" in line else \
                line.split("/*", 1)[1] if "/*" in line else ""
            for eq in re.findall(r"\((\d+\.\d+)\)", comment):
                cited += 1
                if eq not in equations:
                    missing.append(f"{f.relative_to(ROOT)}:{i}: ({eq})")
    assert cited >= 10 and not missing, missing
