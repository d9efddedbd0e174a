"""docs/ARCHITECTURE.md exists, the README points to it, and every reference to it in the code names one of its
sections ("docs/ARCHITECTURE.md, <section>", matched case-insensitively against its headings)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = "docs/ARCHITECTURE.md"


def _headings() -> set[str]:
    text = (ROOT / DOC).read_text()
    return {m.group(1).strip().lower() for m in re.finditer(r"^#{2,4} (.+)$", text, flags=re.M)}


def _references() -> list[tuple[str, str | None]]:
    """(file:line, named section or None) for every mention of the document in src, packages, tests and bench."""
    refs = []
    for base in ("src", "packages", "tests", "bench"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue                                             # virtual environments (bench/peers/.venv)
            for no, line in enumerate(path.read_text().splitlines(), 1):
                for m in re.finditer(re.escape(DOC) + r"(?:, ([^;)\".]+))?", line):
                    refs.append((f"{path.relative_to(ROOT)}:{no}", m.group(1)))
    return [r for r in refs if not r[0].startswith("tests/test_docs.py")]


def test_every_code_reference_names_an_existing_section():
    headings = _headings()
    assert {"layers and dependencies", "stacked node state", "frozen-feature cache", "engines",
            "torch.distributed runtime", "results", "errors", "where to add"} <= headings
    refs = _references()
    assert len(refs) >= 6
    bad = [(where, section) for where, section in refs if section is None or section.strip().lower() not in headings]
    assert not bad, f"references to {DOC} that name no section of it: {bad}"


def test_readme_development_section_points_to_the_architecture():
    readme = (ROOT / "README.md").read_text()
    development = readme.split("## Development", 1)[1]
    assert DOC in development

