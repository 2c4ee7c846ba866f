"""`rig fleet ingest`: validate uploaded episodes on Ray Data, catalog them in Parquet, report.

The driver lists the manifests under SOURCE and drops those already in the catalog (a rerun
ingests only new manifests). Ray Data maps ``validate_episode`` over the rest, one episode per
row, each independent of the others: one task reads one episode's objects from the store,
checks them and returns one catalog row; a hostile upload becomes a rejected row, never an error
of the job. Each worker validates in a child process with a memory cap and a time limit
(``rig.fleet.sandbox``): an upload that exhausts it is retried once, then rejected, and the ingest
goes on. The driver then rejects duplicates (the same take's data, or the same episode id, as an
accepted episode before it), appends the rows as one Parquet file to ``CATALOG/episodes/`` and
rewrites the per-contractor report from the whole catalog.

CATALOG/
  episodes/part-<UTC time>-<id>.parquet   one row per episode (columns: rig.fleet.validate.COLUMNS)
  contractors.parquet                     per contractor: episodes, accepted, rejected, hours accepted, reasons
  report.txt                              the same, for people
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.errors import RigError
from rig.fleet.cluster import start_ray
from rig.fleet.identity import is_id
from rig.fleet.sandbox import Sandbox
from rig.fleet.store import open_store
from rig.fleet.validate import COLUMNS, manifest_objects, reject

EPISODES_DIR = "episodes"


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RigError("the catalog needs pyarrow: pip install 'rig[fleet]'") from None
    return pa, pq


def schema():
    pa, _ = _pa()
    kinds = {str: pa.string(), bool: pa.bool_(), float: pa.float64(), int: pa.int64()}
    return pa.schema([(k, kinds[t]) for k, t in COLUMNS.items()])


def read_catalog(catalog: Path, columns: list[str] | None = None, filter=None):
    """The catalog as one pyarrow Table (empty, with the schema, when there is none yet);
    ``filter`` is a pyarrow expression pushed down to the Parquet reader, e.g.
    ``(pc.field("contractor") == "alice") & ~pc.field("accepted")``."""
    import pyarrow.dataset as pads

    d = Path(catalog) / EPISODES_DIR
    if not d.is_dir() or not any(d.glob("*.parquet")):
        t = schema().empty_table()
        return t.select(columns) if columns else t
    return pads.dataset(str(d), format="parquet", schema=schema()).to_table(columns=columns, filter=filter)


_SANDBOX: list[Sandbox] = []


def _validate_row(row: dict[str, Any], source: str) -> dict[str, Any]:
    if not _SANDBOX:  # one validation child per worker process, kept between episodes
        _SANDBOX.append(Sandbox())
    box = _SANDBOX[0]
    out = box.validate(source, row["manifest_key"], os.environ.get("RIG_INGEST_TMP"))
    out["peak_rss_mib"] = box.peak_mib  # not a catalog column: what the ingest's memory bound is checked on
    return out


def _one_retry() -> dict[str, Any]:
    return {"max_retries": 1}


def reject_duplicates(rows: list[dict[str, Any]], catalog: Path) -> None:
    """Reject, in place, each accepted row whose take data (``data_sha256``) or episode id an accepted
    episode already has, naming the first one: from the catalog, then ``rows`` in their order."""
    pa_table = read_catalog(catalog, ["manifest_key", "accepted", "data_sha256", "episode_uuid"])
    first_data: dict[str, str] = {}
    first_id: dict[str, str] = {}
    for r in pa_table.to_pylist():
        if r["accepted"]:
            first_data.setdefault(r["data_sha256"] or "", r["manifest_key"])
            first_id.setdefault(r["episode_uuid"] or "", r["manifest_key"])
    for r in rows:
        if not r["accepted"]:
            continue
        dup = first_data.get(r["data_sha256"])
        again = first_id.get(r["episode_uuid"])
        if dup:
            reject(r, [f"duplicate: the same take's data as {dup}"])
        elif again:
            reject(r, [f"repeated id: episode {r['episode_uuid']} was already uploaded as {again}"])
        else:
            first_data[r["data_sha256"]] = first_id[r["episode_uuid"]] = r["manifest_key"]


@dataclass
class IngestResult:
    listed: int
    new: int
    accepted: int
    rejected: int
    seconds: float
    part: Path | None
    rows: list[dict[str, Any]]


def ingest(source: str, catalog: Path, address: str | None = None, workers: int | None = None,
           progress: bool = False) -> IngestResult:
    t0 = time.monotonic()
    catalog = Path(catalog)
    store = open_store(source, create=False)
    listed = [o.key for o in manifest_objects(store)]  # oldest first: the first upload of a take wins
    known = set(read_catalog(catalog, ["manifest_key"]).column("manifest_key").to_pylist())
    new = [k for k in listed if k not in known]
    order = {k: i for i, k in enumerate(new)}
    rows: list[dict[str, Any]] = []
    if new:
        start_ray(address, workers)
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress
        n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items([{"manifest_key": k} for k in new],
                                 override_num_blocks=min(len(new), 4 * n_workers))
        # one CPU per task; at most n_workers at once (1 vs 2 workers is what bench_fleet compares). The
        # heavy work runs in each worker's sandbox child, so a task that fails is retried once, not forever
        ds = ds.map(_validate_row, fn_kwargs={"source": store.url},
                    num_cpus=1, compute=ray.data.TaskPoolStrategy(size=n_workers),
                    ray_remote_args_fn=_one_retry)
        rows = sorted(ds.take_all(), key=lambda r: order[r["manifest_key"]])
        reject_duplicates(rows, catalog)
        rows.sort(key=lambda r: r["manifest_key"])
    part = write_rows(catalog, rows) if rows else None
    write_report(catalog)
    acc = sum(1 for r in rows if r["accepted"])
    return IngestResult(len(listed), len(new), acc, len(rows) - acc, time.monotonic() - t0, part, rows)


def write_rows(catalog: Path, rows: list[dict[str, Any]]) -> Path:
    pa, pq = _pa()
    d = Path(catalog) / EPISODES_DIR
    d.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows], schema=schema())
    name = f"part-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = d / (name + ".partial")
    pq.write_table(table, tmp)
    os.replace(tmp, d / name)  # a catalog part appears whole; a crash leaves only a .partial
    return d / name


def contractor_report(catalog: Path):
    """Per contractor: episodes, accepted and rejected (counts), hours accepted, rejections by category.
    Only accepted episodes count hours: a rejected one's duration is whatever its upload claimed."""
    t = read_catalog(catalog).to_pandas()
    import pandas as pd

    cols = ["contractor", "episodes", "accepted", "rejected", "hours_accepted", "mean_quality", "rejections"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    acc = t[t["accepted"]]
    rep = t.groupby("contractor", sort=True).agg(episodes=("accepted", "size"), accepted=("accepted", "sum"))
    rep["rejected"] = rep["episodes"] - rep["accepted"]
    rep["hours_accepted"] = (acc.groupby("contractor")["duration_s"].sum() / 3600.0).reindex(rep.index).fillna(0.0)
    rep["mean_quality"] = acc.groupby("contractor")["quality"].mean().reindex(rep.index).fillna(0.0)
    counts = t[~t["accepted"]].groupby(["contractor", "category"]).size()
    text: dict[str, list[str]] = {}
    for (c, cat), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        text.setdefault(c, []).append(f"{cat} x{n}")
    rep["rejections"] = [", ".join(text.get(c, [])) for c in rep.index]
    rep["accepted"] = rep["accepted"].astype(int)
    rep["rejected"] = rep["rejected"].astype(int)
    return rep.reset_index()[cols]


def shown_id(value: str) -> str:
    """An id as the report prints it: as is when it has the documented form, else escaped, so a
    look-alike (another script's letter, an invisible character) never prints like a real one."""
    return value if is_id(value) else ascii(value)


def write_report(catalog: Path) -> str:
    rep = contractor_report(catalog)
    catalog.mkdir(parents=True, exist_ok=True)
    rep.to_parquet(catalog / "contractors.parquet", index=False)
    lines = [f"{'contractor':24s} {'episodes':>8s} {'accepted':>8s} {'rejected':>8s} {'h accepted':>10s} "
             f"{'quality':>7s}  rejections"]
    for r in rep.itertuples():
        lines.append(f"{shown_id(r.contractor)[:24]:24s} {r.episodes:8d} {r.accepted:8d} {r.rejected:8d} "
                     f"{r.hours_accepted:10.4f} {r.mean_quality:7.2f}  {r.rejections}")
    text = "\n".join(lines) + "\n"
    (catalog / "report.txt").write_text(text)
    return text
