"""One object-store interface with two homes: S3 (any S3-compatible endpoint) and a plain directory.

Both speak the same operations with the same meaning, so the uploader and the ingest have one
code path: whole-object puts with a SHA-256 the store checks on arrival, multipart uploads whose
finished parts the store lists back (that is what makes an upload resumable after kill -9), and a
HEAD that returns the size and the checksum the store itself recorded. Checksums are base64 SHA-256
as S3 spells them; a multipart object's checksum is S3's composite form, the SHA-256 of the parts'
SHA-256s followed by ``-<number of parts>``.

The S3 endpoint and credentials come from the standard AWS environment and config files
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` ...), as with the aws CLI.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.errors import RigError

MiB = 1024 * 1024
READ_CHUNK = 256 * 1024  # the body hands bytes on in pieces this big (progress and bandwidth steps)


class StoreError(RigError):
    """The object store refused or could not do something; the message says what and how to fix it."""


class TransientStoreError(StoreError):
    """A dropped connection, a timeout or a 5xx: worth retrying."""


class _NotFound(StoreError):
    pass


class BadKeyError(StoreError):
    """A key that is empty, absolute, or climbs out of its prefix with '..'."""


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def composite_b64(part_sha256_b64: list[str]) -> str:
    """S3's checksum of a multipart object: SHA-256 over the parts' raw SHA-256s, then -N."""
    h = hashlib.sha256()
    for p in part_sha256_b64:
        h.update(base64.b64decode(p))
    return f"{base64.b64encode(h.digest()).decode()}-{len(part_sha256_b64)}"


def check_key(key: str) -> str:
    """A key is a relative POSIX path without '..', '.' or empty parts; anything else is refused."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise BadKeyError(f"object key {key!r} must be a relative path like 'a/b/c'")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadKeyError(f"object key {key!r} has an empty, '.' or '..' part")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    checksum: str | None = None  # base64 SHA-256, or composite "<b64>-N" for a multipart object
    modified: float = 0.0  # when it was written, POSIX seconds (from listings; 0 where not known)


@dataclass(frozen=True)
class PartInfo:
    number: int
    size: int
    etag: str
    checksum: str | None = None  # base64 SHA-256 of the part, as the store recorded it


class Throttle:
    """A shared token bucket: at most ``rate`` bytes a second through every body that uses it."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self._lock = threading.Lock()
        self._t = time.monotonic()
        self._allowance = 0.0

    def take(self, n: int) -> None:
        if self.rate is None or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # a burst of at most a quarter second keeps the average honest at any chunk size
            self._allowance = min(self._allowance + (now - self._t) * self.rate, self.rate * 0.25)
            self._t = now
            self._allowance -= n
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Body:
    """A seekable window of a local file handed to a store: it reads in small pieces so a
    progress bar and a bandwidth limit see the bytes as they go. A retry seeks back to 0; only
    bytes past the furthest point reached count as progress, so a retried part is not counted twice."""

    def __init__(self, path: Path, offset: int, length: int, progress: Callable[[int], None] | None = None,
                 throttle: Throttle | None = None) -> None:
        self.path, self.offset, self.length = path, offset, length
        self.progress, self.throttle = progress, throttle
        self._pos = 0
        self._high = 0
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        left = self.length - self._pos
        n = left if n is None or n < 0 else min(n, left)
        n = min(n, READ_CHUNK) if n > READ_CHUNK and self.throttle and self.throttle.rate else n
        if n <= 0:
            return b""
        if self.throttle is not None:
            self.throttle.take(n)
        self._f.seek(self.offset + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        if self._pos > self._high:
            if self.progress is not None:
                self.progress(self._pos - self._high)
            self._high = self._pos
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.length}[whence]
        self._pos = max(0, min(self.length, base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ObjectStore(ABC):
    """What the fleet needs from an object store. Keys are relative to the store's root prefix."""

    url: str

    @abstractmethod
    def put(self, key: str, body: Body | bytes, checksum: str) -> ObjectInfo:
        """Store a whole object; the store checks ``checksum`` (base64 SHA-256) on arrival."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and the store's own checksum of ``key``, or None if it does not exist."""

    @abstractmethod
    def get(self, key: str, start: int | None = None, stop: int | None = None) -> bytes:
        """Bytes ``[start, stop)`` of ``key`` (all of it by default)."""

    def download(self, key: str, path: Path, limit: int | None = None) -> tuple[int, str]:
        """Copy ``key`` to the file ``path`` in pieces (bounded memory); returns (bytes, hex SHA-256).
        Stops after ``limit`` + 1 bytes, so an object larger than promised cannot fill the disk."""
        h = hashlib.sha256()
        n = 0
        step = 8 * MiB
        with open(path, "wb") as f:
            while limit is None or n <= limit:
                chunk = self.get(key, n, n + step)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
                if len(chunk) < step:
                    break
        return n, h.hexdigest()

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (sizes only; no checksums)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    # ---- multipart ---------------------------------------------------------------------------
    @abstractmethod
    def open_uploads(self, key: str) -> list[str]:
        """Upload ids of unfinished multipart uploads of ``key``, oldest first."""

    @abstractmethod
    def start_multipart(self, key: str) -> str: ...

    @abstractmethod
    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        """Parts the store holds for this upload; None if the upload is unknown (finished or aborted)."""

    @abstractmethod
    def upload_part(self, key: str, upload_id: str, number: int, body: Body | bytes, checksum: str) -> PartInfo: ...

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[PartInfo]) -> None: ...

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None: ...


def open_store(dest: str | os.PathLike[str], create: bool = True) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3Store; anything else is a directory -> DirStore (made if
    ``create``; a reader such as the ingest passes False and gets an error for a missing one)."""
    text = os.fspath(dest)
    if text.startswith("s3://"):
        return S3Store.from_url(text)
    if "://" in text:
        raise StoreError(f"{text}: only s3://bucket/prefix or a plain directory is supported")
    if not create and not Path(text).is_dir():
        raise StoreError(f"{text}: no such directory store; give the DEST that `rig upload` sent to")
    return DirStore(Path(text))


def _read_all(body: Body | bytes) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    body.seek(0)
    out = bytearray()
    while chunk := body.read(READ_CHUNK):
        out += chunk
    return bytes(out)


# ---- a plain directory ----------------------------------------------------------------------------
class DirStore(ObjectStore):
    """Objects are files under ``root``; the store's own bookkeeping lives in ``root/.rig-store``.

    Like S3 it checks each object's SHA-256 on arrival and records it, objects appear whole
    (written to a temporary file, then renamed), and a multipart upload keeps its parts until it
    is completed or aborted.
    """

    META = ".rig-store"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)
        try:
            (self.root / self.META / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot use {self.root} as an object store: {e.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta(self, key: str) -> Path:
        return self.root / self.META / "meta" / (check_key(key) + ".json")

    def _mp(self, key: str) -> Path:
        return self.root / self.META / "multipart" / hashlib.sha256(check_key(key).encode()).hexdigest()[:32]

    def _tmp(self) -> Path:
        return self.root / self.META / "tmp" / uuid.uuid4().hex

    @staticmethod
    def _write_json(path: Path, value: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)

    def _land(self, key: str, tmp: Path, size: int, checksum: str) -> ObjectInfo:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._write_json(self._meta(key), {"size": size, "checksum": checksum})
        os.replace(tmp, dest)  # the object appears whole or not at all
        return ObjectInfo(key, size, checksum)

    def _receive(self, body: Body | bytes, checksum: str) -> tuple[Path, int]:
        tmp = self._tmp()
        h = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as f:
            if isinstance(body, bytes | bytearray | memoryview):
                chunks: Iterator[bytes] = iter([bytes(body)])
            else:
                body.seek(0)
                chunks = iter(lambda: body.read(READ_CHUNK), b"")
            for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if base64.b64encode(h.digest()).decode() != checksum:
            tmp.unlink(missing_ok=True)
            raise StoreError("BadDigest: the SHA-256 sent does not match the bytes received")
        return tmp, size

    def put(self, key: str, body: Body | bytes, checksum: str) -> ObjectInfo:
        self._path(key)
        tmp, size = self._receive(body, checksum)
        return self._land(key, tmp, size, checksum)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(self._meta(key).read_text())
        except (OSError, ValueError):
            return ObjectInfo(key, size, None)  # put there by hand: the store has no checksum of it
        return ObjectInfo(key, size, meta.get("checksum") if meta.get("size") == size else None)

    def get(self, key: str, start: int | None = None, stop: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start or 0)
                return f.read() if stop is None else f.read(max(0, stop - (start or 0)))
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no object {key!r}") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != self.META]
                rel_dir = ""
            dirnames.sort()
            for name in sorted(filenames):
                key = f"{rel_dir}/{name}" if rel_dir else name
                key = key.replace(os.sep, "/")
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(os.path.join(dirpath, name))
                        yield ObjectInfo(key, st.st_size, modified=st.st_mtime)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._meta(key).unlink(missing_ok=True)

    def open_uploads(self, key: str) -> list[str]:
        base = self._mp(key)
        if not base.is_dir():
            return []
        ups = [d for d in base.iterdir() if d.is_dir() and (d / "started").exists()]
        ups.sort(key=lambda d: float((d / "started").read_text() or 0))
        return [d.name for d in ups]

    def start_multipart(self, key: str) -> str:
        uid = uuid.uuid4().hex
        d = self._mp(key) / uid
        d.mkdir(parents=True)
        (d / "started").write_text(repr(time.time()))
        return uid

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise StoreError(f"NoSuchUpload: {upload_id!r}")
        return self._mp(key) / upload_id

    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        d = self._upload_dir(key, upload_id)
        if not (d / "started").exists():
            return None
        out: dict[int, PartInfo] = {}
        for meta in d.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                m = json.loads(meta.read_text())
                if (d / f"{m['number']:05d}").stat().st_size == m["size"]:
                    out[m["number"]] = PartInfo(m["number"], m["size"], m["etag"], m["checksum"])
        return out

    def upload_part(self, key: str, upload_id: str, number: int, body: Body | bytes, checksum: str) -> PartInfo:
        d = self._upload_dir(key, upload_id)
        if not (d / "started").exists():
            raise StoreError(f"NoSuchUpload: {upload_id} of {key}")
        tmp, size = self._receive(body, checksum)
        etag = hashlib.md5(tmp.read_bytes(), usedforsecurity=False).hexdigest()
        part = PartInfo(number, size, etag, checksum)
        os.replace(tmp, d / f"{number:05d}")
        self._write_json(d / f"{number:05d}.json", part.__dict__)
        return part

    def complete_multipart(self, key: str, upload_id: str, parts: list[PartInfo]) -> None:
        d = self._upload_dir(key, upload_id)
        have = self.list_parts(key, upload_id)
        if have is None:
            raise StoreError(f"NoSuchUpload: {upload_id} of {key}")
        tmp = self._tmp()
        size = 0
        with open(tmp, "wb") as out:
            for p in parts:
                h = have.get(p.number)
                if h is None or h.etag != p.etag:
                    tmp.unlink(missing_ok=True)
                    raise StoreError(f"InvalidPart: part {p.number} of {key} is not the one uploaded")
                with open(d / f"{p.number:05d}", "rb") as f:
                    while chunk := f.read(4 * MiB):
                        out.write(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        self._land(key, tmp, size, composite_b64([have[p.number].checksum or "" for p in parts]))
        self.abort_multipart(key, upload_id)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        d = self._upload_dir(key, upload_id)
        for f in d.glob("*"):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()


# ---- S3 and compatibles ---------------------------------------------------------------------------
class S3Store(ObjectStore):
    """Any S3-compatible store through boto3; every object carries a SHA-256 the server checks."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"{url}: name a bucket, as in s3://bucket/prefix")
        return cls(bucket, prefix)

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise StoreError("s3:// destinations need boto3: pip install 'rig[fleet]'") from None
            cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                         request_checksum_calculation="when_required",
                         response_checksum_validation="when_required")
            self._client = boto3.client("s3", config=cfg)
        return self._client

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        try:
            return fn(Bucket=self.bucket, **kw)
        except NoCredentialsError:
            raise StoreError(f"{self.url}: no AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                             f"or a profile in ~/.aws/credentials") from None
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise _NotFound(f"{self.url}: no object ({what})") from None
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at the endpoint; create it or fix the "
                                 f"URL (AWS_ENDPOINT_URL sets a non-AWS endpoint)") from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
                raise TransientStoreError(f"{what}: {code or status}") from e
            raise StoreError(f"{self.url}: {what} failed: {code} {e.response.get('Error', {}).get('Message', '')}"
                             ) from e
        except (ConnectionError, HTTPClientError) as e:
            raise TransientStoreError(f"{what}: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"{self.url}: {what} failed: {e}") from e

    def put(self, key: str, body: Body | bytes, checksum: str) -> ObjectInfo:
        size = len(body)
        if isinstance(body, Body):
            body.seek(0)
        self._call(f"put {key}", self.client.put_object, Key=self._k(key), Body=body,
                   ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum, ContentLength=size)
        return ObjectInfo(key, size, checksum)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self._call(f"head {key}", self.client.head_object, Key=self._k(key), ChecksumMode="ENABLED")
        except _NotFound:
            return None
        return ObjectInfo(key, int(r["ContentLength"]), r.get("ChecksumSHA256"))

    def get(self, key: str, start: int | None = None, stop: int | None = None) -> bytes:
        kw: dict[str, Any] = {"Key": self._k(key)}
        if start is not None or stop is not None:
            if stop is not None and stop <= (start or 0):
                return b""
            kw["Range"] = f"bytes={start or 0}-{'' if stop is None else stop - 1}"
        try:
            r = self._call(f"get {key}", self.client.get_object, **kw)
        except StoreError as e:
            if "InvalidRange" in str(e):  # a range starting at the end: nothing more, as for a file
                return b""
            raise
        return r["Body"].read()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        token = None
        while True:
            kw: dict[str, Any] = {"Prefix": self.prefix + prefix}
            if token:
                kw["ContinuationToken"] = token
            r = self._call("list", self.client.list_objects_v2, **kw)
            for o in r.get("Contents", []):
                yield ObjectInfo(o["Key"][len(self.prefix):], int(o["Size"]), modified=o["LastModified"].timestamp())
            if not r.get("IsTruncated"):
                return
            token = r["NextContinuationToken"]

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", self.client.delete_object, Key=self._k(key))

    def open_uploads(self, key: str) -> list[str]:
        r = self._call("list uploads", self.client.list_multipart_uploads, Prefix=self._k(key))
        ups = [u for u in r.get("Uploads", []) if u["Key"] == self._k(key)]
        ups.sort(key=lambda u: u["Initiated"])
        return [u["UploadId"] for u in ups]

    def start_multipart(self, key: str) -> str:
        r = self._call(f"start multipart {key}", self.client.create_multipart_upload, Key=self._k(key),
                       ChecksumAlgorithm="SHA256")
        return r["UploadId"]

    def list_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        out: dict[int, PartInfo] = {}
        marker = 0
        while True:
            try:
                r = self._call(f"list parts {key}", self.client.list_parts, Key=self._k(key), UploadId=upload_id,
                               PartNumberMarker=marker)
            except StoreError as e:
                if "NoSuchUpload" in str(e):
                    return None
                raise
            for p in r.get("Parts", []):
                n = int(p["PartNumber"])
                out[n] = PartInfo(n, int(p["Size"]), p["ETag"].strip('"'), p.get("ChecksumSHA256"))
            if not r.get("IsTruncated"):
                return out
            marker = int(r["NextPartNumberMarker"])

    def upload_part(self, key: str, upload_id: str, number: int, body: Body | bytes, checksum: str) -> PartInfo:
        size = len(body)
        if isinstance(body, Body):
            body.seek(0)
        r = self._call(f"upload part {number} of {key}", self.client.upload_part, Key=self._k(key),
                       UploadId=upload_id, PartNumber=number, Body=body, ContentLength=size,
                       ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        return PartInfo(number, size, r["ETag"].strip('"'), r.get("ChecksumSHA256"))

    def complete_multipart(self, key: str, upload_id: str, parts: list[PartInfo]) -> None:
        self._call(f"complete {key}", self.client.complete_multipart_upload, Key=self._k(key), UploadId=upload_id,
                   MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"',
                                               **({"ChecksumSHA256": p.checksum} if p.checksum else {})}
                                              for p in parts]})

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(StoreError):
            self._call(f"abort {key}", self.client.abort_multipart_upload, Key=self._k(key), UploadId=upload_id)
