"""Where `rig fleet ingest` runs: a local Ray on this machine, or a running Ray cluster it joins.

``--address`` takes what Ray Data supports: a head's GCS address (``HOST:PORT``, port 6379 unless
``ray start --head --port`` said otherwise), or ``auto`` (``RAY_ADDRESS``, else the cluster that
``ray start`` started on this machine). The driver joins as a Ray driver, so it runs on a node of
the cluster. ``ray://`` (Ray Client) is refused: Ray Data does not work through it
(ray-project/ray#48682).

Without ``--address`` the ingest always starts its own local Ray, even beside a running cluster
or with ``RAY_ADDRESS`` set (``ray.init`` would join those on its own, and refuse ``num_cpus``).

Before ``ray.init`` joins, the address is checked in bounded time: a TCP connect, then one GCS
request. Ray's own join retries for 20 s on a refused token and for minutes on an unreachable
host; here both are one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from drivers.errors import RigError

PROBE_S = 5.0  # TCP connect to the GCS port
GCS_CHECK_S = 15.0  # one GCS request (the cluster id): a healthy head answers in milliseconds
RAY_CLIENT_ISSUE = "ray-project/ray#48682"

_joined: list[str] = []  # the GCS address this process joined (empty: a local Ray, or none)


def forwarded_env() -> dict[str, str]:
    """What the Ray workers need from the driver's environment: the store's credentials and endpoint,
    the import path, the validation's scratch directory."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PYTHONPATH", "RIG_INGEST_TMP")}


def check_address(address: str, what: str = "--address") -> str:
    """``address`` when Ray Data can use it (``auto`` or ``HOST:PORT``); else RigError saying what to give."""
    a = address.strip()
    if a == "auto" and what == "--address":
        env = _ray_address_env()
        if env:
            check_address(env, "RAY_ADDRESS (which --address auto uses)")
        return a
    _refuse_scheme(a, what)
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RigError(f"{what} {address}: give the head's GCS address as HOST:PORT (e.g. 10.0.0.5:6379, "
                       "what `ray start --head` printed), or `auto` on a node of the cluster")
    return a


def _ray_address_env() -> str:
    """RAY_ADDRESS as ``ray.init(address="auto")`` reads it ("" when unset, or itself ``auto``)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return "" if env == "auto" else env


def _refuse_scheme(address: str, what: str) -> None:
    scheme, sep, rest = address.partition("://")
    if not sep:
        return
    if scheme == "ray":
        raise RigError(f"{what} {address}: Ray Data does not run through Ray Client (ray://, {RAY_CLIENT_ISSUE}); "
                       f"run the ingest on a node of the cluster with --address {rest.rsplit(':', 1)[0]}:6379 "
                       "(the head's GCS address, what `ray start --head` printed) or --address auto")
    raise RigError(f"{what} {address}: give the head's GCS address as HOST:PORT (e.g. 10.0.0.5:6379), "
                   f"not a {scheme}:// URL, or `auto` on a node of the cluster")


def start_ray(address: str | None = None, workers: int | None = None) -> None:
    """Local Ray with ``workers`` CPUs (default: all), or join the cluster at ``address``."""
    try:
        import ray
    except ImportError:
        raise RigError("the ingest runs on Ray: pip install 'rig[fleet]' (ray[data])") from None
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": forwarded_env()}
    if not address:
        # "local": never the cluster that RAY_ADDRESS or a `ray start` on this machine points at
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, runtime_env=runtime_env, logging_level=logging.WARNING)
        return
    address = check_address(address)
    gcs = _gcs_address(address)
    _check_reachable(gcs)
    _check_gcs(gcs)
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
    except AuthenticationError as e:
        raise RigError(_auth_line(gcs, e)) from None
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RigError(f"could not join the Ray cluster at {gcs}: {first} (run the ingest on a node of the cluster: "
                       f"`ray start --address={gcs}` there first)") from None
    _joined[:] = [gcs]


def _gcs_address(address: str) -> str:
    """HOST:PORT of the GCS that ``address`` names (``auto``: as ``ray.init`` finds it)."""
    if address != "auto":
        return address
    env = _ray_address_env()
    if env:
        return check_address(env, "RAY_ADDRESS")
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    if not found:
        raise RigError("--address auto: no Ray cluster runs on this machine and RAY_ADDRESS is not set; join one "
                       "first (`ray start --address=HEAD:6379`) or give --address HEAD:6379")
    # auto lets Ray use this machine's token for the cluster it found (ray.init does the same next;
    # its warning, written for a head starting up, would mislead here)
    with contextlib.suppress(ImportError):
        from ray._private.authentication import authentication_token_setup as setup

        quiet = setup.logger.level
        setup.logger.setLevel(logging.ERROR)
        try:
            setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        finally:
            setup.logger.setLevel(quiet)
    return found


def _check_reachable(gcs: str) -> None:
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise RigError(f"no Ray cluster answers at {gcs} ({why} within {PROBE_S:g} s): check the host and the port "
                       "(the head's GCS port, 6379 unless `ray start --head --port` set another) and that the head "
                       "is up (`ray start --head` there)") from None


def _check_gcs(gcs: str) -> None:
    """One GCS request, in bounded time and without Ray's C++ warnings on stderr."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    out: dict[str, Any] = {}

    def ask() -> None:
        try:
            out["id"] = GcsClient(address=gcs).cluster_id
        except BaseException as e:  # noqa: BLE001 -- carried to the caller's thread
            out["error"] = e

    t = threading.Thread(target=ask, name="rig-gcs-check", daemon=True)
    with _quiet_stderr():
        t.start()
        t.join(GCS_CHECK_S)
    if t.is_alive():
        raise RigError(f"{gcs} accepts connections but no Ray GCS answered within {GCS_CHECK_S:g} s: is that "
                       "the head's GCS port (6379 unless `ray start --head --port` set another)?")
    err = out.get("error")
    if isinstance(err, AuthenticationError):
        raise RigError(_auth_line(gcs, err))
    if err is not None:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RigError(f"no Ray GCS answered at {gcs} ({first}): is that the head's GCS port (6379 unless "
                       "`ray start --head --port` set another)?")


def _auth_line(gcs: str, e: Exception) -> str:
    where = "RAY_AUTH_TOKEN (or the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token)"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (f"the Ray cluster at {gcs} requires an authentication token and this machine sent none: set "
                f"RAY_AUTH_MODE=token and put the cluster's token in {where}; `ray get-auth-token` on the head "
                "prints it")
    return (f"the Ray cluster at {gcs} refused this machine's authentication token: put the cluster's token in "
            f"{where}; `ray get-auth-token` on the head prints it")


@contextlib.contextmanager
def _quiet_stderr():
    """Ray's C++ client logs each failed attempt straight to file descriptor 2: the reason comes back
    as an exception, and the CLI prints it as one line."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def describe() -> str:
    """Where this process's Ray runs, for the ingest's summary: the cluster joined and its size."""
    import ray

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if _joined:
        return f"Ray cluster at {_joined[0]}: {nodes} node(s), {cpus} CPU(s)"
    return f"local Ray: {cpus} CPU(s)"
