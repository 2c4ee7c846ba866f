"""Who recorded an episode and on what: a contractor id and a device id, set once per rig.

Stored in ``$XDG_CONFIG_HOME/rig/identity.toml`` (``~/.config/rig/identity.toml``), or the file
``RIG_IDENTITY`` names. Both ids become parts of object keys, so they are short and plain.

One id format for contractors, devices and datasets, here and in the ingest: 1-64 ASCII letters,
digits, '.', '_' or '-', starting with a letter or digit. Nothing else: no look-alike letters from
other scripts, no invisible characters, no trailing newline, so two ids that print alike are equal.
"""

from __future__ import annotations

import os
import re
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from drivers.errors import RigError

ID_FORMAT = "1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


class IdentityError(RigError):
    pass


@dataclass(frozen=True)
class Identity:
    contractor: str
    device: str


def identity_path() -> Path:
    if os.environ.get("RIG_IDENTITY"):
        return Path(os.environ["RIG_IDENTITY"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "rig" / "identity.toml"


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(kind: str, value: str) -> str:
    if not is_id(value):
        raise IdentityError(f"{kind} id {ascii(value)[:80]} must be {ID_FORMAT}")
    return value


def load_identity() -> Identity | None:
    path = identity_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise IdentityError(f"{path}: unreadable identity ({e}); fix or delete it and set it again") from None
    try:
        return Identity(check_id("contractor", data["contractor"]), check_id("device", data["device"]))
    except KeyError as e:
        raise IdentityError(f"{path}: no {e.args[0]} key; set the identity again with "
                            f"`rig upload --set-identity --contractor ID`") from None


def require_identity() -> Identity:
    ident = load_identity()
    if ident is None:
        raise IdentityError(f"this rig has no contractor id yet ({identity_path()}); set it once with "
                            f"`rig upload --set-identity --contractor YOUR-ID`")
    return ident


def set_identity(contractor: str, device: str | None = None, force: bool = False) -> Identity:
    """Write the rig's identity. It is set once: changing it needs ``force``."""
    check_id("contractor", contractor)
    old = load_identity()
    new = Identity(contractor, check_id("device", device) if device else (old.device if old else
                                                                          f"dev-{uuid.uuid4().hex[:12]}"))
    if old is not None and old != new and not force:
        raise IdentityError(f"this rig is already {old.contractor}/{old.device} ({identity_path()}); ids are set "
                            f"once per rig, pass --force to change them")
    path = identity_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps({"contractor": new.contractor, "device": new.device}))
    os.replace(tmp, path)
    return new
