"""Plain S3 (MinIO in a cluster, SeaweedFS or MinIO here) and local paths behind one set of calls.

Only the standard S3 API is used, with path-style addressing, so any S3 server
works. Keys come from the usual environment variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`; a Kubernetes Secret in a cluster). The endpoint is the one a
pipeline step was handed (`with endpoint(url):`), else `AWS_ENDPOINT_URL`;
`cartridge stack env` prints them for the local stack.

A store that does not answer (down, restarting, overloaded: connection refused or
reset, timeouts, 5xx) is retried with exponential backoff for up to
CARTRIDGE_S3_RETRY_SECONDS (60) before the call fails with one line, so a restart of
MinIO under a training step or a self-play upload costs a pause, not the step. Errors
that waiting cannot mend (keys, a missing bucket or key) fail at once.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)
Result = TypeVar("Result")

_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}
_ENDPOINT: ContextVar[str | None] = ContextVar("s3_endpoint", default=None)


@contextmanager
def endpoint(url: str | None) -> Iterator[None]:
    """S3 calls inside the block go to `url` ('' or None: AWS_ENDPOINT_URL's)."""
    token = _ENDPOINT.set(url or None)
    try:
        yield
    finally:
        _ENDPOINT.reset(token)


def current_endpoint() -> str | None:
    return _ENDPOINT.get() or os.environ.get("AWS_ENDPOINT_URL") or None


class StorageError(RuntimeError):
    """An S3 or file operation that failed, with the reason in words."""


class StoreUnavailable(StorageError):
    """The store did not answer; waiting may mend it."""


def retry_seconds() -> float:
    return float(os.environ.get("CARTRIDGE_S3_RETRY_SECONDS", "60"))


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """('bucket', 'key/prefix') from 's3://bucket/key/prefix'."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI {uri!r} has no bucket")
    return bucket, key.strip("/")


def join(base: str | Path, *parts: str) -> str:
    """Join path segments onto a local path or an s3:// URI."""
    if is_s3(base):
        return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client for the current environment's endpoint and keys.

    boto3's default session caches the first credentials it finds, so clients are
    built from their own session, one per distinct setting, reused while it holds.
    """
    return _client_for(
        endpoint_url or current_endpoint(),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


@lru_cache(maxsize=16)
def _client_for(endpoint_url, access_key, secret_key, region):
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


@contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Turn boto errors into one StorageError line that says what to fix."""
    endpoint = current_endpoint() or "the default AWS endpoint"
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in _CREDENTIAL_ERRORS:
            raise StorageError(
                f"S3 at {endpoint} rejected the credentials for {uri} ({code}): check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        if code in ("NoSuchBucket", "404", "NoSuchKey"):
            raise StorageError(f"{uri} does not exist on S3 at {endpoint} ({code})") from None
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise StoreUnavailable(
                f"S3 at {endpoint} failed a request for {uri}: {error}"
            ) from None
        raise StorageError(f"S3 request for {uri} failed: {error}") from None
    except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError):
        raise StoreUnavailable(f"cannot reach S3 at {endpoint} (for {uri})") from None
    except BotoCoreError as error:
        raise StorageError(f"S3 request for {uri} failed: {error}") from None


def _call(uri: str, operation: Callable[[], Result]) -> Result:
    """`operation` under `s3_errors`, retried while the store does not answer."""
    limit = retry_seconds()
    retrying = Retrying(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop_after_delay(limit),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "%s; retrying (%.0f s so far, giving up after %.0f s)",
            state.outcome.exception(),
            state.seconds_since_start,
            limit,
        ),
    )
    for attempt in retrying:
        with attempt, s3_errors(uri):
            return operation()
    raise AssertionError("unreachable: tenacity re-raises the last error")


def upload_file(local: str | Path, uri: str) -> None:
    bucket, key = split_s3(uri)
    _call(uri, lambda: s3_client().upload_file(str(local), bucket, key))


def download_file(uri: str, local: str | Path) -> Path:
    bucket, key = split_s3(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    _call(uri, lambda: s3_client().download_file(bucket, key, str(local)))
    return local


def list_keys(uri: str) -> list[str]:
    """Every object key under an s3:// prefix (as full s3:// URIs), sorted."""
    return sorted(_list(uri))


def _list(location: str, delimiter: str = "") -> dict[str, object]:
    """One paginated listing under a prefix: object URIs with their LastModified, or
    with a `delimiter`, sub-prefix URIs (with None)."""
    bucket, prefix = split_s3(location)
    prefix = f"{prefix}/" if prefix else ""

    def listing() -> dict[str, object]:
        found: dict[str, object] = {}
        pages = (
            s3_client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix, Delimiter=delimiter)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[f"s3://{bucket}/{item['Key']}"] = item["LastModified"]
            for item in page.get("CommonPrefixes", []):
                found[f"s3://{bucket}/{item['Prefix'].rstrip('/')}"] = None
        return found

    return _call(location, listing)


def modified_times(location: str | Path) -> dict[str, float]:
    """Every file under `location`, recursively, with its modification time (epoch
    seconds): S3 LastModified, or the local mtime. One listing, no downloads."""
    if not is_s3(location):
        path = Path(location)
        if not path.is_dir():
            raise StorageError(f"{path} is not a directory")
        return {str(f): f.stat().st_mtime for f in path.rglob("*") if f.is_file()}
    return {uri: modified.timestamp() for uri, modified in _list(str(location)).items()}


def list_children(location: str | Path) -> list[str]:
    """Immediate sub-directories (local) or sub-prefixes (s3) of `location`, sorted."""
    if not is_s3(location):
        path = Path(location)
        if not path.is_dir():
            raise StorageError(f"{path} is not a directory")
        return sorted(str(child) for child in path.iterdir() if child.is_dir())
    return sorted(uri for uri, modified in _list(str(location), "/").items() if modified is None)


def upload_dir(local: str | Path, uri: str) -> str:
    """Copy every file under `local` to the prefix `uri`; returns `uri`.

    Files go in the order they were written, so a reader that treats the last one as
    the completion marker (a replay shard's metadata.json) never sees a partial copy.
    """
    local = Path(local)
    files = [p for p in local.rglob("*") if p.is_file()]
    for path in sorted(files, key=lambda p: (p.stat().st_mtime_ns, str(p))):
        upload_file(path, join(uri, path.relative_to(local).as_posix()))
    return uri


def download_dir(uri: str, local: str | Path) -> Path:
    """Copy every object under the prefix `uri` into `local`."""
    local = Path(local)
    keys = list_keys(uri)
    if not keys:
        raise StorageError(f"{uri} holds no objects")
    base = uri.rstrip("/") + "/"
    for key in keys:
        download_file(key, local / key[len(base) :])
    return local


def copy_dir(source: str | Path, destination: str | Path) -> str:
    """Copy a directory between any two of local path and s3:// prefix."""
    if is_s3(destination):
        if is_s3(source):
            raise StorageError("copying between two s3:// prefixes is not supported")
        return upload_dir(source, str(destination))
    if is_s3(source):
        return str(download_dir(str(source), destination))
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return str(destination)


def delete_prefix(location: str | Path) -> int:
    """Delete everything under a local directory or s3:// prefix; returns objects removed."""
    if not is_s3(location):
        path = Path(location)
        if not path.exists():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count
    keys = list_keys(str(location))
    bucket, prefix = split_s3(str(location))
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = [{"Key": split_s3(k)[1]} for k in keys[start : start + 1000]]
        _call(
            str(location),
            lambda batch=batch: s3_client().delete_objects(
                Bucket=bucket, Delete={"Objects": batch}
            ),
        )
    # Filer-backed stores (the local SeaweedFS) keep the emptied folders and go on listing
    # them as common prefixes, so Triton would still see a model or version folder.
    # Deleting a folder's own key removes it there and is a no-op on plain S3.
    for folder in _folders_under(prefix, [split_s3(k)[1] for k in keys]):
        _call(
            str(location),
            lambda folder=folder: s3_client().delete_object(Bucket=bucket, Key=folder),
        )
    return len(keys)


def _folders_under(prefix: str, keys: list[str]) -> list[str]:
    """The `a/b/` folder keys that hold `keys` and lie under `prefix`, deepest first."""
    folders = set()
    for key in keys:
        folder = key
        while "/" in folder:
            folder = folder.rsplit("/", 1)[0]
            if not (folder + "/").startswith(prefix):
                break
            folders.add(folder + "/")
    return sorted(folders, key=lambda folder: (-folder.count("/"), folder))
