"""docs/reliability.md names a test for every fault case; each named test exists, and the README
states the number of cases the document lists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_case_names_tests_that_exist_and_the_readme_count_matches():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    rows = re.findall(r"^\| (\d+) \|.*\|(.*)\|$", doc, flags=re.M)
    assert [int(n) for n, _ in rows] == list(range(1, len(rows) + 1))
    sources = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "tests").rglob("test_*.py")}
    for number, tests in rows:
        files = re.findall(r"`(tests/[\w/]+\.py)", tests)
        assert files, f"case {number} names no test"
        for name in re.findall(r"::(test_\w+)", tests):
            assert any(f"def {name}(" in src for src in sources.values()), f"case {number}: {name} does not exist"
        assert all(f in sources for f in files), f"case {number}: a named file does not exist"
    assert f"**{len(rows)} fault cases**" in doc
    assert f"{len(rows)} fault cases" in (ROOT / "README.md").read_text()
