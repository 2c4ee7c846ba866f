"""The rooms' walls, read from the source with ``ast``: every import that runs counts, the lazy ones
inside functions too (they run the same way, only later); ``if TYPE_CHECKING:`` ones never run.

- drivers/ talks to devices and imports nothing from rig/, recorder/ or calibration/;
- recorder/ imports nothing from rig/, calibration/ nothing from rig/ or recorder/;
- only rig/cli.py and the commands themselves import rig/commands/ (the app shares code with a
  command through a rig/ module, never by importing the command);
- no module imports itself back through others (no cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rig", "drivers", "calibration", "recorder")
WALLS = {  # room -> rooms it must not import
    "drivers": {"rig", "recorder", "calibration"},
    "recorder": {"rig"},
    "calibration": {"rig", "recorder"},
}
# A cycle being broken on another branch (integrity: recorder/dataset.py <-> recorder/writer.py).
# Delete the entry when that lands: the test fails while an entry lists a cycle that is gone.
KNOWN_CYCLES: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (not those under ``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``from a.b import c`` counts as importing a.b.c
    where c is a module, else a.b."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                wanted = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for w in wanted:
                if w.split(".")[0] in PACKAGES and (t := owner(w)) and t != name:
                    targets.add(t)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "drivers.errors" in graph["rig.cli"]  # a top-level `from x import y`
    assert "rig.calibrating" in graph["rig.tui.calibration"]  # lazy, inside a method
    assert "drivers.gripper.protocol" in graph["drivers.gripper.driver"]  # `from pkg import module`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rig.cli\nelse:\n    import os\n")
    assert sorted(ast.unparse(n) for n in imports(typed)) == ["from typing import TYPE_CHECKING", "import os"]


def test_no_room_imports_through_its_walls():
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() for t in sorted(targets)
           if t.split(".")[0] in WALLS.get(m.split(".")[0], set())]
    assert not bad, "imports running upward:\n" + "\n".join(bad)


def test_only_the_cli_imports_commands():
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() for t in sorted(targets)
           if t.startswith("rig.commands") and not (m == "rig.cli" or m.startswith("rig.commands"))]
    assert not bad, "shared code belongs in a rig/ module, not a command:\n" + "\n".join(bad)


def test_no_import_cycle():
    found = set(cycles(import_graph()))
    new = [" <-> ".join(sorted(c)) for c in found - KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(new)
    gone = [" <-> ".join(sorted(c)) for c in KNOWN_CYCLES - found]
    assert not gone, f"no longer a cycle, delete it from KNOWN_CYCLES: {gone}"


def test_command_line_code_lives_in_rig():
    """drivers/, recorder/ and calibration/ are libraries: argument parsing belongs to rig/commands/."""
    bad = []
    for name, path in modules().items():
        if name.split(".")[0] == "rig":
            continue
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad += [f"{name} imports {n}" for n in names if n.split(".")[0] == "argparse"]
    assert not bad, "\n".join(bad)


# ---- walls inside rig/ ----------------------------------------------------------------------------

# The control loop and what it runs each tick: never training code (torch, datasets, models), not
# even lazily; what both sides need (frame down-scaling, the target shaping) lives in a module of
# the loop's side that training imports.
CONTROL_LOOP = ("rig.loop", "rig.sources", "rig.ticks", "rig.arms", "rig.realtime", "rig.shaping",
                "rig.downscale")
NOT_FROM_THE_LOOP = ("rig.train", "rig.tui", "rig.commands", "rig.fleet")


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or through others: module -> the one that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        m = todo.pop()
        for t in sorted(graph.get(m, ())):
            if t not in seen and t != start:
                seen[t] = m
                todo.append(t)
    return seen


def test_the_control_loop_never_imports_training_code():
    graph = import_graph()
    bad = []
    for m in CONTROL_LOOP:
        assert m in graph, f"{m} is gone: update CONTROL_LOOP"
        for t, via in reachable(graph, m).items():
            if t.startswith(NOT_FROM_THE_LOOP):
                bad.append(f"{m} reaches {t} (imported by {via})")
    assert not bad, "the control loop must not import these (move the shared piece to the loop's side):\n" + \
        "\n".join(bad)


def test_the_wall_check_follows_imports_through_other_modules():
    graph = {"rig.loop": {"rig.sources"}, "rig.sources": {"rig.downscale"}, "rig.downscale": {"rig.train.data"},
             "rig.train.data": set()}
    assert reachable(graph, "rig.loop") == {"rig.sources": "rig.loop", "rig.downscale": "rig.sources",
                                            "rig.train.data": "rig.downscale"}


def private_imports(path: Path, name: str, mods: dict[str, Path]) -> list[str]:
    """``from other.module import _name`` in one module (its own submodules' privates count too: a
    package and its modules are separate rooms)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in imports(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        if base.split(".")[0] not in PACKAGES or base == name:
            continue
        for a in node.names:
            if a.name.startswith("_") and not a.name.startswith("__") and f"{base}.{a.name}" not in mods:
                found.append(f"{name} imports {a.name} from {base}")
    return found


def test_no_module_imports_a_private_name_of_another():
    mods = modules()
    bad = [line for name, path in mods.items() for line in private_imports(path, name, mods)]
    assert not bad, "make the name public in the module that owns it (or move it to the room both use):\n" + \
        "\n".join(bad)


def test_the_private_name_check_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from rig.x import y, _z\n\ndef f():\n    from .sibling import _hidden, __version__\n")
    mods = {"rig.pkg.m": src}
    assert sorted(private_imports(src, "rig.pkg.m", mods)) == ["rig.pkg.m imports _hidden from rig.pkg.sibling",
                                                                "rig.pkg.m imports _z from rig.x"]
