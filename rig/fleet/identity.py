"""Who recorded an episode and on what: a contractor id and a device id, set once per rig.

Stored in ``$XDG_CONFIG_HOME/rig/identity.toml`` (``~/.config/rig/identity.toml``), or the file
``RIG_IDENTITY`` names. Both ids become parts of object keys, so they are short and plain.
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

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


def check_id(kind: str, value: str) -> str:
    if not _ID.match(value or ""):
        raise IdentityError(f"{kind} id {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                            f"letter or digit")
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
