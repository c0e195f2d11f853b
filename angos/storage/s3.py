"""S3 ObjectStore on boto3 (any S3-compatible endpoint: AWS, MinIO, moto).

Keys map to ``<key_prefix>/<key>`` in one bucket. The contract is the one in
:mod:`angos.storage.base`; how each method meets it here:

- ``put`` is a single PUT (S3 object writes are atomic); ``put_if_absent`` is a
  PUT with ``If-None-Match: *`` (HTTP 412 means "already there").
- ``write_stream``: a body that fits in one part is a single PUT, a larger one
  a multipart upload completed only at the end, so readers never see a
  prefix; a failure aborts the multipart upload.
- ``append`` (upload sessions). An in-progress S3 multipart upload cannot be
  read back, but the upload path must re-hash the bytes so far when a PATCH
  lands on another worker or box, and must cut a refused chunk off again. So
  an append object is staged as readable objects:

      <key>              the tail: the last bytes below one part, plus user
                         metadata ``angos-parts`` (n) and ``angos-part-size`` (p)
      <key>~part000001   full parts of exactly p bytes (p >= 5 MiB)
      ...

  The size is ``n * p + len(tail)``. Each call reads the tail (< p bytes),
  appends the incoming chunks, uploads every full p-byte block as the next
  part object and finally rewrites the tail with the new part count: that
  last PUT is the commit point, so an append that fails midway leaves the
  object at its previous size on every worker (stray part objects beyond n are
  ignored and overwritten). ``move`` then
  assembles the parts server-side into the destination with one multipart
  upload of ``UploadPartCopy`` parts (no bytes pass through this process), and
  a small upload (no full part yet) is a single ``CopyObject``.
- Memory: a part or a tail on its way to S3 is gathered in a :class:`~angos.storage.spool.Spool`,
  which holds ``SPOOL`` (1 MiB) in memory and the rest in an unlinked
  temporary file (``$TMPDIR``), so a request writing a 50 MiB part costs about
  a megabyte of memory however many run at once.
- ``open_read`` returns a reader from :mod:`angos.storage.s3_reads`: one GET's
  body, or an append object read part by part and then its tail.
- ``truncate`` cuts an append object back (drops later parts, re-reads the
  part that holds the new end into the tail).
- ``move`` = copy + delete (multipart copy above ``multipart_copy_threshold``).
- ``list``/``children`` use ListObjectsV2 (with ``Delimiter="/"`` for children);
  staged part objects (``~part``: ``~`` appears in no key ``paths`` builds) are
  hidden from listings.
- ``presign(key, content_type)`` returns a time-limited GET URL (used for 307
  redirects); ``abort_multipart_older_than`` serves ``scrub --multipart``.

Network failures surface as :class:`StorageUnavailable` (HTTP 503). The boto3
client is created lazily per process: gunicorn forks workers and a connection
pool must never be shared across a fork.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Iterable, Iterator

from .base import NotFound, ObjectInfo, ObjectStore, StorageUnavailable
from .s3_reads import PART_MARK, Body, Concat, part_key
from .spool import SPOOL, Spool, fill

log = logging.getLogger("angos.storage.s3")

META_PARTS = "angos-parts"
META_PSIZE = "angos-part-size"
MIN_PART = 5 * 1024 * 1024
PRESIGN_TTL = 900  # seconds a redirect URL stays valid: long enough to start a pull, short to limit leaks
# A conditional request refused: the precondition failed, or another conditional write is in flight.
_REFUSED = ("PreconditionFailed", "ConditionalRequestConflict")


class S3Store(ObjectStore):
    name = "s3"
    supports_presign = True

    def __init__(self, bucket: str, endpoint: str | None = None, region: str = "us-east-1",
                 access_key_id: str | None = None, secret_key: str | None = None, key_prefix: str = "",
                 multipart_part_size: int = 50 * 1024 * 1024, multipart_copy_threshold: int = 5 * 1000**3,
                 connect_timeout: float = 3.0, read_timeout: float = 60.0):
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.access_key_id = access_key_id
        self.secret_key = secret_key
        self.prefix = key_prefix.strip("/")
        self.part_size = max(multipart_part_size, MIN_PART)
        self.copy_threshold = max(multipart_copy_threshold, MIN_PART)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client = None
        self._client_pid = None
        self._guard = threading.Lock()

    @classmethod
    def from_config(cls, cfg) -> "S3Store":
        return cls(cfg.bucket, cfg.endpoint, cfg.region, cfg.access_key_id, cfg.secret_key, cfg.key_prefix,
                   cfg.multipart_part_size, cfg.multipart_copy_threshold)

    # ------------------------------------------------------------ plumbing

    @property
    def client(self):
        if self._client is None or self._client_pid != os.getpid():
            with self._guard:
                if self._client is None or self._client_pid != os.getpid():
                    import boto3
                    from botocore.config import Config

                    cfg = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                 connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                                 retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=64)
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint, region_name=self.region,
                        aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_key, config=cfg)
                    self._client_pid = os.getpid()
        return self._client

    def _k(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _dir(self, prefix: str) -> str:
        p = self._k(prefix) if prefix.strip("/") else self.prefix
        return f"{p}/" if p else ""

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    @contextlib.contextmanager
    def _errors(self, key: str = ""):
        """Translate botocore failures: missing keys to NotFound, transport errors to StorageUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404 and code != "NoSuchBucket":
                raise NotFound(key) from None
            if status is not None and (status >= 500 or status in (401, 403)) or code == "NoSuchBucket":
                raise StorageUnavailable(f"S3 {self.endpoint or 'default endpoint'}: {code or status}") from None
            raise
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 {self.endpoint or 'default endpoint'} unreachable: {exc}") from None

    @staticmethod
    def _code(exc) -> str:
        return exc.response.get("Error", {}).get("Code", "")

    def _head(self, key: str) -> dict:
        with self._errors(key):
            return self.client.head_object(Bucket=self.bucket, Key=self._k(key))

    @staticmethod
    def _parts(meta: dict) -> tuple[int, int]:
        md = meta.get("Metadata") or {}
        try:
            return int(md.get(META_PARTS, 0)), int(md.get(META_PSIZE, 0))
        except ValueError:
            return 0, 0

    # ------------------------------------------------------------ reads

    def get(self, key: str) -> bytes:
        with self._errors(key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        n, _ = self._parts(resp)
        if n:
            resp["Body"].close()
            with self.open_read(key) as fh:
                return fh.read()
        with self._errors(key):
            return resp["Body"].read()

    def stat(self, key: str) -> ObjectInfo:
        head = self._head(key)
        n, p = self._parts(head)
        return ObjectInfo(head["ContentLength"] + n * p, head["LastModified"].timestamp())

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                kwargs = {"Range": f"bytes={offset}-"} if offset else {}
                resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key), **kwargs)
        except ClientError as exc:
            if self._code(exc) != "InvalidRange":
                raise
            head = self._head(key)  # offset at or past the end of the tail: maybe an append object
            resp = None
        meta = resp if resp is not None else head
        n, p = self._parts(meta)
        if not n:
            return Body(resp["Body"]) if resp is not None else io.BytesIO(b"")
        if resp is not None:
            resp["Body"].close()
        return Concat(self, key, n, p, offset)

    def _get_range(self, key: str, start: int, end: int | None = None):
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end}"
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key), Range=rng)["Body"]

    # ------------------------------------------------------------ writes

    def put(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        for _ in range(10):
            try:
                with self._errors(key):
                    self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = self._code(exc)
                if code == "PreconditionFailed":
                    return False
                if code == "ConditionalRequestConflict":  # a concurrent conditional write is in flight
                    time.sleep(0.05)
                    continue
                raise
        return False

    # -- conditional requests: compare-and-swap on ETags, for the S3 locks and the S3 job store

    def get_versioned(self, key: str) -> tuple[str, bytes]:
        """``(ETag, body)`` of ``key``; NotFound when absent."""
        with self._errors(key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            return resp["ETag"], resp["Body"].read()

    def put_conditional(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False,
                        content_type: str | None = None) -> str | None:
        """PUT guarded by ``If-Match: <if_match>`` or (``if_absent``) ``If-None-Match: *``.

        Returns the new ETag, or None when the precondition failed (including a
        concurrent conditional write in flight); NotFound when ``if_match`` names
        a key that is gone."""
        from botocore.exceptions import ClientError

        cond = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"} if if_absent else {}
        if content_type is not None:
            cond["ContentType"] = content_type
        try:
            with self._errors(key):
                return self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **cond)["ETag"]
        except ClientError as exc:
            if self._code(exc) in _REFUSED:
                return None
            raise

    def delete_if_match(self, key: str, etag: str) -> bool:
        """Delete ``key`` only while it still has ``etag``: False when it changed; NotFound when gone."""
        from botocore.exceptions import ClientError

        try:
            with self._errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._k(key), IfMatch=etag)
            return True
        except ClientError as exc:
            if self._code(exc) in _REFUSED:
                return False
            raise

    def honours_conditional_writes(self, probe_key: str) -> bool | None:
        """Whether a second create-if-absent of one key is refused, as locks and the job store need.

        None when the endpoint cannot be reached: an outage is not a verdict (``/readyz``
        and the callers' own requests report it)."""
        try:
            first = self.put_if_absent(probe_key, b"1")
            second = self.put_if_absent(probe_key, b"2")
        except StorageUnavailable as exc:
            log.warning("could not verify that the S3 endpoint honours conditional writes: %s", exc)
            return None
        finally:
            with contextlib.suppress(Exception):
                self.delete(probe_key)
        return first and not second

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        upload_id, parts, total = None, [], 0

        def flush(full: Spool) -> None:
            # Larger than one part: a multipart upload that becomes visible only on completion.
            nonlocal upload_id, total
            with self._errors(key):
                if upload_id is None:
                    upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._k(key))["UploadId"]
                n = len(parts) + 1
                etag = self.client.upload_part(Bucket=self.bucket, Key=self._k(key), UploadId=upload_id,
                                               PartNumber=n, Body=full.body())["ETag"]
            parts.append({"PartNumber": n, "ETag": etag})
            total += full.size

        spool = Spool()
        try:
            spool = fill(spool, chunks, self.part_size, flush)
            if upload_id is None:
                with self._errors(key):
                    self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=spool.body())
                return spool.size
            if spool.size:
                flush(spool)
            with self._errors(key):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:
                self._abort(key, upload_id)
            raise
        finally:
            spool.close()
        return total

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort; scrub --multipart reaps what is left
            log.warning("could not abort multipart upload %s of %s", upload_id, key)

    def _tail_state(self, key: str) -> tuple[int, int, Spool]:
        """(parts, part size, tail bytes) of an append object; (0, part_size, nothing) when absent."""
        try:
            with self._errors(key):
                resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except NotFound:
            return 0, self.part_size, Spool()
        n, p = self._parts(resp)
        return n, (p if n else self.part_size), self._spooled(key, resp["Body"])

    def _spooled(self, key: str, body) -> Spool:
        spool = Spool()
        try:
            with self._errors(key):
                for block in iter(lambda: body.read(SPOOL), b""):
                    spool.write(block)
        except BaseException:
            spool.close()
            raise
        finally:
            body.close()
        return spool

    def _commit_tail(self, key: str, n: int, p: int, tail: Spool) -> None:
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=tail.body(),
                                   Metadata={META_PARTS: str(n), META_PSIZE: str(p)})

    def append(self, key: str, chunks: Iterable[bytes]) -> int:
        n, p, spool = self._tail_state(key)

        def flush(full: Spool) -> None:
            nonlocal n
            with self._errors(key):
                self.client.put_object(Bucket=self.bucket, Key=self._k(part_key(key, n + 1)), Body=full.body())
            n += 1

        try:
            spool = fill(spool, chunks, p, flush)
            self._commit_tail(key, n, p, spool)  # the commit point (see module docstring)
            return n * p + spool.size
        finally:
            spool.close()

    def truncate(self, key: str, size: int) -> None:
        try:
            head = self._head(key)
        except NotFound:
            return
        n, p = self._parts(head)
        p = p if n else self.part_size
        if size >= n * p + head["ContentLength"]:
            return
        keep = size // p if n else 0
        if keep < n:
            # The new end falls in part keep+1 (or exactly on its start): that part's head becomes the tail.
            source, cut = part_key(key, keep + 1), size - keep * p
        else:
            source, cut = key, size - n * p
        tail = self._spooled(key, self._get_range(source, 0, cut - 1)) if cut else Spool()
        try:
            self._commit_tail(key, keep, p, tail)
        finally:
            tail.close()

    def move(self, src: str, dst: str) -> None:
        head = self._head(src)
        n, p = self._parts(head)
        if n:
            self._assemble(src, dst, n, p, head["ContentLength"])
        else:
            self._copy(src, dst, head["ContentLength"])
        self.delete(src)
        for i in range(1, n + 1):
            self.delete(part_key(src, i))

    def _copy(self, src: str, dst: str, size: int) -> None:
        source = {"Bucket": self.bucket, "Key": self._k(src)}
        if size <= self.copy_threshold:
            with self._errors(src):
                # REPLACE drops any append-object metadata: the destination is a plain object.
                self.client.copy_object(Bucket=self.bucket, Key=self._k(dst), CopySource=source,
                                        MetadataDirective="REPLACE")
            return
        ranges, start = [], 0
        while start < size:
            end = min(start + self.copy_threshold, size) - 1
            ranges.append((source, f"bytes={start}-{end}"))
            start = end + 1
        self._multipart_copy(dst, ranges)

    def _assemble(self, src: str, dst: str, n: int, p: int, tail_size: int) -> None:
        sources = [({"Bucket": self.bucket, "Key": self._k(part_key(src, i))}, None) for i in range(1, n + 1)]
        if tail_size:
            sources.append(({"Bucket": self.bucket, "Key": self._k(src)}, None))
        self._multipart_copy(dst, sources)

    def _multipart_copy(self, dst: str, sources: list) -> None:
        with self._errors(dst):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._k(dst))["UploadId"]
        parts = []
        try:
            for i, (source, rng) in enumerate(sources, 1):
                kwargs = {"CopySourceRange": rng} if rng else {}
                with self._errors(dst):
                    res = self.client.upload_part_copy(Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id,
                                                       PartNumber=i, CopySource=source, **kwargs)
                parts.append({"PartNumber": i, "ETag": res["CopyPartResult"]["ETag"]})
            with self._errors(dst):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=self._k(dst), UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(dst, upload_id)
            raise

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def delete_prefix(self, prefix: str) -> None:
        batch = []
        for full in self._list_full(prefix):
            batch.append({"Key": full})
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list) -> None:
        with self._errors():
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # ------------------------------------------------------------ listings

    def _list_full(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._dir(prefix)):
                for obj in page.get("Contents", ()):
                    yield obj["Key"]

    def list(self, prefix: str) -> Iterator[str]:
        for full in self._list_full(prefix):
            if PART_MARK not in full:
                yield self._rel(full)

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """One LIST request per 1000 objects: the listing carries the sizes. An append object's
        earlier parts (``<key>~partNNNNNN``) are listed after it and added to it; ``open`` holds
        the keys that later ones may still add to (those that are a prefix of the current key),
        so memory stays bounded by how deeply key names nest, not by how many there are."""
        paginator = self.client.get_paginator("list_objects_v2")
        open_: list[list] = []  # [full key, size], each a prefix of the next
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._dir(prefix)):
                for obj in page.get("Contents", ()):
                    full = obj["Key"]
                    while open_ and not full.startswith(open_[-1][0]):
                        done = open_.pop()
                        yield self._rel(done[0]), done[1]
                    if open_ and full.startswith(open_[-1][0] + PART_MARK):
                        open_[-1][1] += obj["Size"]
                    elif PART_MARK not in full:
                        open_.append([full, obj["Size"]])
        while open_:
            done = open_.pop()
            yield self._rel(done[0]), done[1]

    def children(self, prefix: str) -> list[str]:
        base = self._dir(prefix)
        names = set()
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                for cp in page.get("CommonPrefixes", ()):
                    names.add(cp["Prefix"][len(base):].rstrip("/"))
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(base):]
                    if name and PART_MARK not in name:
                        names.add(name)
        return sorted(names)

    # ------------------------------------------------------------ extras

    def presign(self, key: str, content_type: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._k(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_TTL)

    def check(self) -> None:
        try:
            with self._errors():
                self.client.head_bucket(Bucket=self.bucket)
        except NotFound:  # HEAD has no error body: a bare 404 here means the bucket is gone
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist") from None

    def abort_multipart_older_than(self, seconds: float, dry_run: bool = False) -> list[str]:
        """Abort (or with ``dry_run`` only list) multipart uploads under this store's prefix
        started more than ``seconds`` ago; returns one ``<key> (<upload id>)`` per upload."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=seconds)
        done = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._errors():
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=self._dir("")))
        for page in pages:
            for up in page.get("Uploads", ()) or ():
                if up["Initiated"] > cutoff:
                    continue
                label = f"{self._rel(up['Key'])} ({up['UploadId']})"
                if not dry_run:
                    try:
                        with self._errors(up["Key"]):
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                               UploadId=up["UploadId"])
                    except NotFound:
                        continue  # finished or aborted meanwhile
                done.append(label)
        return done
