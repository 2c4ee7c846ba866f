"""The README is the front door and stays one: short, its commands real, every page linked."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rig.cli import build_parser
from rig.sim.tasks import get_task

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


# ---- defaults quoted in docs and in --help come from the code ------------------------------------

def parser_of(*path: str) -> argparse.ArgumentParser:
    """The (sub)parser of `rig PATH...`."""
    p = build_parser()
    for name in path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p


def cli_default(path: str, option: str) -> object:
    """What `rig PATH` uses for OPTION when it is not given."""
    for a in parser_of(*path.split())._actions:
        if option in a.option_strings:
            return a.default
    raise AssertionError(f"`rig {path}` has no option {option}")


def every_action(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from every_action(sp, (*path, name))
        else:
            yield path, a


def same(quoted: str, value: object) -> bool:
    """A number as the docs write it ("5 000", "0.8") or a word, against the code's value."""
    text = quoted.replace("\u202f", "").replace(" ", "").replace(",", "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return text.strip("`") == str(value) or Path(text) == Path(str(value))
    try:
        return float(text) == float(value)
    except ValueError:
        return False


def _claims() -> list[tuple[str, str, tuple]]:
    """(page, pattern whose groups quote defaults, the code's values). A pattern that no longer
    matches means the page changed: update the pattern here, not the number."""
    from recorder.compact import CompactOptions
    from recorder.video import AV1, H264, VideoOptions
    from rig.config import DEFAULT_CONFIG, DEFAULT_DATASET
    from rig.train.quick import QuickConfig
    from rig.train.trainer import TrainConfig

    av1, h264 = CompactOptions().video_options(AV1, 30.0), CompactOptions().video_options(H264, 30.0)
    return [
        ("docs/lerobot.md", r"AV1 \(SVT-AV1, crf (\d+), GOP (\d+)",
         (cli_default("export", "--crf"), cli_default("export", "--gop"))),
        ("docs/lerobot.md", r"`LeRobotExportOptions` defaults: AV1 crf (\d+), GOP (\d+)",
         (VideoOptions().crf, VideoOptions().gop)),
        ("docs/fleet.md", r"default AV1 crf (\d+) preset (\d+), H\.264 crf (\d+)", (av1.crf, av1.preset, h264.crf)),
        ("README.md", r"compaction to AV1 \(crf (\d+)\)", (av1.crf,)),
        ("docs/training.md", r"\(default: visuomotor (\d+); quick ([\d ]+) steps instead, at most (\d+) s\)",
         (TrainConfig.budget_s, QuickConfig.steps, QuickConfig.budget_s)),
        ("docs/training.md", r"trains the \*\*quick policy\*\* by default \(`--policy (\w+)`: a seeded count of\s+"
                             r"([\d ]+) steps", (cli_default("train", "--policy"), QuickConfig.steps)),
        ("docs/quick-train.md", r"`--steps N` \(default ([\d ]+),", (QuickConfig.steps,)),
        ("docs/quick-train.md", r"`--fast-trials N` \(default (\d+)", (cli_default("train", "--fast-trials"),)),
        ("docs/quick-train.md", r"`--eval-seed` \(first trial seed, (\d+)\)", (cli_default("train", "--eval-seed"),)),
        ("docs/quick-train.md", r"`--camera` \(default (\w+)\)", (cli_default("train", "--camera"),)),
        ("docs/quick-train.md", r"`--target-rate` \(default ([\d.]+)\)", (cli_default("train", "--target-rate"),)),
        ("docs/app.md", r"`--config NAME\\\|PATH` \| the rig \(default `([\w-]+)`\)", (DEFAULT_CONFIG,)),
        ("docs/app.md", r"`--dataset PATH` \| Zarr dataset, created if missing \(default `([\w./-]+)`\)",
         (cli_default("collect", "--dataset"),)),
        ("docs/app.md", r"`--reset-seconds S` \| pause after a take before the next one is ready \(default ([\d.]+)\)",
         (cli_default("collect", "--reset-seconds"),)),
        ("docs/policy-on-arms.md", r"`--seconds` like any take \(default: the sim task's trial length, (\d+) s for transfer cube",
         (get_task("transfer_cube").trial_s,)),
        ("docs/first-day.md", r"`rig record` takes the task's trial length each by default \((\d+) s for transfer cube\)",
         (get_task("transfer_cube").trial_s,)),
        ("docs/first-day.md", r"into `([\w./-]+)` unless `--dataset`", (DEFAULT_DATASET,)),
    ]


def test_defaults_quoted_in_docs_are_the_codes():
    wrong = []
    for page, pattern, values in _claims():
        m = re.search(pattern, re.sub(r"\s+", " ", (ROOT / page).read_text()))  # lines wrap anywhere
        assert m, f"{page} no longer says /{pattern}/: update this claim in {Path(__file__).name}"
        for quoted, value in zip(m.groups(), values, strict=True):
            if not same(quoted, value):
                wrong.append(f"{page}: says {quoted!r} where the code's default is {value!r} ({m.group(0)!r})")
    assert not wrong, "\n".join(wrong)


def test_defaults_in_help_are_the_parsers():
    """`--help` text that names a default ("(default 30)") names the one argparse uses."""
    wrong = []
    for path, a in every_action(build_parser()):
        m = re.search(r"\(default:? ([^),;]+)", a.help or "")
        if not m or a.default is None or isinstance(a.default, bool):
            continue
        quoted = m.group(1).strip()
        numeric = re.fullmatch(r"[\d .]+", quoted) is not None
        if numeric != isinstance(a.default, int | float):
            continue  # words for a number ("Ctrl-C" for 0), or the other way round
        if not same(quoted, a.default):
            wrong.append(f"rig {' '.join(path)} {'/'.join(a.option_strings)}: help says {quoted!r}, "
                         f"default is {a.default!r}")
    assert not wrong, "\n".join(wrong)


def test_the_extras_table_lists_every_extra():
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    table = re.search(r"^## Extras\n(.*?)(?=^## )", (DOCS / "install.md").read_text(), re.MULTILINE | re.DOTALL)
    assert table, "docs/install.md has no '## Extras' section"
    listed = set(re.findall(r"^\| `(\w+)` \|", table.group(1), re.MULTILINE))
    assert listed == extras, f"docs/install.md's extras table: {sorted(listed)}; pyproject.toml: {sorted(extras)}"


def test_episode_paths_in_docs_are_the_layout():
    """Paths into a dataset written in docs follow recorder/layout.py (episodes/000002)."""
    from recorder.layout import EPISODES, episode_name

    wrong = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for m in re.finditer(r"\.zarr/([\w]+)/?(\d+)?", path.read_text()):
            top, num = m.group(1), m.group(2)
            if top.startswith("episode") and (top != EPISODES or (num and num != episode_name(int(num)))):
                wrong.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not wrong, f"not the dataset layout ({EPISODES}/{episode_name(2)}):\n" + "\n".join(wrong)
