"""The README is the front door and stays one: short, its commands real, every page linked."""

from __future__ import annotations

import re
from pathlib import Path

from rig.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Pages other branches add; the README and docs/index.md link them already. Delete a name here
# when its page lands (the test says so).
PENDING: set[str] = set()


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def links(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        out.append((file, anchor))
    return out


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines; move detail to a docs/ page"


def test_quick_start_is_two_commands_and_the_test_one_is_what_ci_runs():
    quick = section(README.read_text(), "Quick start")
    commands = [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, re.DOTALL)]
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    run, test = commands
    assert run.startswith("pip install -e ") and run.endswith("&& rig"), run
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci, f"{test!r} is not a line of .ci/run"


def test_the_command_table_is_the_cli():
    table = section(README.read_text(), "Commands")
    documented = set()
    for row in re.findall(r"^\| (.+?) \|", table, re.MULTILINE):
        documented |= set(re.findall(r"`rig ([a-z][a-z-]*)", row))
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert documented - commands == set(), "README lists commands that `rig --help` does not have"
    assert commands - documented == set(), "commands missing from the README's table"


def test_every_link_resolves_and_every_page_is_linked():
    pages = sorted(DOCS.glob("*.md"))
    landed = PENDING & {p.name for p in pages}
    assert not landed, f"these pages exist now: remove them from PENDING in {Path(__file__).name}: {landed}"
    broken = []
    for path in [README, *pages]:
        for file, anchor in links(path):
            target = (path.parent / file).resolve() if file else path
            if target.parent == DOCS and target.name in PENDING:
                continue
            if not target.exists():
                broken.append(f"{path.relative_to(ROOT)}: {file}")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{path.relative_to(ROOT)}: {file}#{anchor} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
    for index in (README, DOCS / "index.md"):
        linked = {(index.parent / f).resolve().name for f, _ in links(index) if f.endswith(".md")}
        missing = {p.name for p in pages if p.name != "index.md"} - linked
        assert not missing, f"{index.relative_to(ROOT)} does not link {sorted(missing)}"
