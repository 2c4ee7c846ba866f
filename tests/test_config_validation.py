"""Config validation: every malformed file is one ConfigError line, never a traceback.

Named holes first (each one a traceback or a silent acceptance before), then hypothesis
mutating the built-in configs (types, values, structure, bytes), then the CLI end to end.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import RigError
from rig.config import ConfigError, RigConfig, builtin_names, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
PAIR = """\
name = "pair"
rate_hz = 50
[safety]
engage_seconds = 1.0

[[cameras]]
name = "top"
kind = "synthetic"

[[arms]]
name = "leader"
role = "leader"
port = "/dev/ttyUSB0"
joints = [{ name = "waist", id = 1, model = "xm430-w350" }]

[[arms]]
name = "follower"
role = "follower"
leader = "leader"
port = "/dev/ttyUSB1"
joints = [{ name = "waist", id = 1, model = "xm540-w270" }]
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "rig.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_the_valid_base_loads_with_the_default_watchdog(tmp_path):
    cfg = load_config(write(tmp_path, PAIR))
    assert cfg.safety.watchdog_ms == 100.0 and cfg.cameras[0].name == "top"


@pytest.mark.parametrize("old,new,expected", [
    ('rate_hz = 50', 'rate_hz = nan', "rate_hz: must be a finite number, got nan"),
    ('rate_hz = 50', 'rate_hz = inf', "rate_hz: must be a finite number, got inf"),
    ('rate_hz = 50', 'rate_hz = 1e9', "rate_hz: must be between None and 1000.0, got 1000000000.0"),
    ('engage_seconds = 1.0', 'engage_seconds = -1.0', "safety.engage_seconds: must be between 0 and 60, got -1.0"),
    ('engage_seconds = 1.0', 'watchdog_ms = 5', "safety.watchdog_ms: a servo's bus watchdog counts in 20 ms units"),
    ('engage_seconds = 1.0', 'watchdog_ms = 10000', "safety.watchdog_ms: must be between 0 and 2540, got 10000.0"),
    ('name = "leader"', 'name = "../leader"', "arms[0].name: '../leader' is not a safe name"),
    ('name = "top"', 'name = "a/b"', "cameras[0].name: 'a/b' is not a safe name"),
    ('kind = "synthetic"', 'kind = "synthetic"\nwidth = "wide"', "cameras[0].width: must be an integer, got 'wide'"),
    ('kind = "synthetic"', 'kind = "synthetic"\nfps = nan', "cameras[0].fps: must be a finite number, got nan"),
    ('kind = "synthetic"', 'kind = "webcam"', "cameras[0].kind: 'webcam' is not one of opencv, realsense, sim, synthetic"),
    ('[[arms]]\nname = "leader"', '[[cameras]]\nname = "top"\nkind = "sim"\n\n[[arms]]\nname = "leader"',
     "cameras[1].name: two cameras are called 'top'; names must be unique"),
    ('joints = [{ name = "waist", id = 1, model = "xm430-w350" }]',
     'joints = [{ name = "waist", id = 1, model = "xm430-w350", shadow_id = 999 }]',
     "arms[0].joints[0].shadow_id: servo IDs are 0-252, got 999"),
    ('joints = [{ name = "waist", id = 1, model = "xm430-w350" }]',
     'joints = [{ name = "waist", id = 1, model = "xm430-w350", lower = nan }]',
     "arms[0].joints[0].lower: must be a finite number, got nan"),
])
def test_each_hole_is_one_line_naming_the_key(tmp_path, old, new, expected):
    assert old in PAIR
    message = error_of(write(tmp_path, PAIR.replace(old, new, 1)))
    assert expected in message
    assert message.startswith(str(tmp_path / "rig.toml"))


def test_wrong_typed_lists_are_one_line(tmp_path):
    assert "cameras[0]: each camera is a [[cameras]] table" in error_of(
        write(tmp_path, 'cameras = [1, 2]\narms = []\n'))
    text = PAIR.replace('joints = [{ name = "waist", id = 1, model = "xm430-w350" }]',
                        'joints = [{ name = "waist", id = 1, model = "xm430-w350" }]\n'
                        '[arms.calibration]\nzero = ["a"]\nsign = [1]')
    assert "arms[0].calibration.zero[0]: must be a float, got 'a'" in error_of(write(tmp_path, text))
    text = text.replace('zero = ["a"]', 'zero = [2048]').replace("sign = [1]", "sign = [0.5]")
    assert "arms[0].calibration.sign[0]: must be an integer, got 0.5" in error_of(write(tmp_path, text))


def test_a_file_that_is_not_utf8_or_not_a_file(tmp_path):
    assert "is not UTF-8 text (at byte offset 9); save it as UTF-8 TOML" in error_of(
        write(tmp_path, b'name = "p\xff\xfe"\n'))
    folder = tmp_path / "configs.toml"
    folder.mkdir()
    assert "is a directory, not a file" in error_of(folder)


# ---- hypothesis: mutations of every built-in config ------------------------------------------------

def _builtin_raw() -> list[dict]:
    return [tomllib.loads((resources.files("rig.configs") / f"{n}.toml").read_text()) for n in builtin_names()]


BUILTINS = _builtin_raw()
leaf = st.one_of(
    st.booleans(), st.integers(), st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0]),
    st.text(max_size=12), st.sampled_from(["../x", "a/b", "", "sim:left_leader", "xm430-w350", "hold", "sim"]),
)
values = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["name", "id", "kind", "model", "x"]), inner,
                                                 max_size=3)), max_leaves=6)


def _paths(node, prefix=()):
    """Every (container, key) in a parsed TOML document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield node, k
        yield from _paths(v, (*prefix, k))


mutation = st.tuples(st.integers(0, 10_000), st.sampled_from(["replace", "delete", "add", "duplicate"]), values,
                     st.sampled_from(["name", "rate_hz", "watchdog_ms", "unknown", "joints", "port", "gripper"]))


def _apply(raw: dict, m) -> None:
    index, op, value, key = m
    spots = list(_paths(raw))
    if not spots:
        return
    node, k = spots[index % len(spots)]
    if op == "replace":
        node[k] = value
    elif op == "delete":
        del node[k]
    elif op == "add":
        target = node[k]
        if isinstance(target, dict):
            target[key] = value
        elif isinstance(target, list):
            target.append(value)
        else:
            node[k] = value
    elif isinstance(node, list):
        node.append(copy.deepcopy(node[k]))  # a second camera/arm/joint just like this one


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(BUILTINS) - 1), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_configs_give_a_config_or_one_line(which, mutations):
    raw = copy.deepcopy(BUILTINS[which])
    for m in mutations:
        _apply(raw, m)
    try:
        cfg = parse_config(raw, "fuzz.toml")
    except RigError as exc:
        assert isinstance(exc, ConfigError), repr(exc)
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml: ")
        return
    assert isinstance(cfg, RigConfig)
    assert math.isfinite(cfg.rate_hz) and cfg.rate_hz > 0
    assert len({a.name for a in cfg.arms}) == len(cfg.arms)
    assert len({c.name for c in cfg.cameras}) == len(cfg.cameras)
    assert all(".." not in a.name and "/" not in a.name for a in cfg.arms)
    assert cfg.safety.engage_seconds >= 0


SIM_TEXT = (resources.files("rig.configs") / "sim-aloha.toml").read_bytes()


@settings(max_examples=150, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, len(SIM_TEXT) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_byte_flipped_files_give_a_config_or_one_line(tmp_path_factory, flips):
    data = bytearray(SIM_TEXT)
    for i, b in flips:
        data[i] = b
    path = tmp_path_factory.mktemp("flip") / "rig.toml"
    path.write_bytes(bytes(data))
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# ---- the CLI -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    PAIR.replace("rate_hz = 50", "rate_hz = nan"),
    PAIR.replace('name = "leader"', 'name = "../../etc"'),
    b"rate_hz = 50\n\xff\n",
    'cameras = [1]\narms = []\n',
])
def test_cli_says_one_line_and_exits_2(tmp_path, text):
    path = write(tmp_path, text)
    out = subprocess.run([sys.executable, "-m", "rig", "teleop", "--config", str(path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rig: {path}: "), out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_cli_on_a_directory(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rig", "teleop", "--config", str(tmp_path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.strip() == (
        f"rig: {tmp_path}: (file): is a directory, not a file; give the path of a .toml file in it")
