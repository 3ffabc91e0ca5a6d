"""Plain S3 (MinIO in a cluster, SeaweedFS or MinIO here) and local paths behind one set of calls.

Only the standard S3 API is used, with path-style addressing, so any S3 server
works. Keys come from the usual environment variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`; a Kubernetes Secret in a cluster). The endpoint is the one a
pipeline step was handed (`with endpoint(url):`), else `AWS_ENDPOINT_URL`;
`cartridge stack env` prints them for the local stack.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

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
        raise StorageError(f"S3 request for {uri} failed: {error}") from None
    except EndpointConnectionError:
        raise StorageError(f"cannot reach S3 at {endpoint} (for {uri})") from None
    except BotoCoreError as error:
        raise StorageError(f"S3 request for {uri} failed: {error}") from None


def upload_file(local: str | Path, uri: str) -> None:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().upload_file(str(local), bucket, key)


def download_file(uri: str, local: str | Path) -> Path:
    bucket, key = split_s3(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    with s3_errors(uri):
        s3_client().download_file(bucket, key, str(local))
    return local


def list_keys(uri: str) -> list[str]:
    """Every object key under an s3:// prefix (as full s3:// URIs), sorted."""
    bucket, prefix = split_s3(uri)
    prefix = f"{prefix}/" if prefix else ""
    found = []
    with s3_errors(uri):
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            found += [f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", [])]
    return sorted(found)


def modified_times(location: str | Path) -> dict[str, float]:
    """Every file under `location`, recursively, with its modification time (epoch
    seconds): S3 LastModified, or the local mtime. One listing, no downloads."""
    if not is_s3(location):
        path = Path(location)
        if not path.is_dir():
            raise StorageError(f"{path} is not a directory")
        return {str(f): f.stat().st_mtime for f in path.rglob("*") if f.is_file()}
    bucket, prefix = split_s3(str(location))
    prefix = f"{prefix}/" if prefix else ""
    times = {}
    with s3_errors(str(location)):
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                times[f"s3://{bucket}/{item['Key']}"] = item["LastModified"].timestamp()
    return times


def list_children(location: str | Path) -> list[str]:
    """Immediate sub-directories (local) or sub-prefixes (s3) of `location`, sorted."""
    if not is_s3(location):
        path = Path(location)
        if not path.is_dir():
            raise StorageError(f"{path} is not a directory")
        return sorted(str(child) for child in path.iterdir() if child.is_dir())
    bucket, prefix = split_s3(str(location))
    prefix = f"{prefix}/" if prefix else ""
    children = []
    with s3_errors(str(location)):
        pages = (
            s3_client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        )
        for page in pages:
            children += [
                f"s3://{bucket}/{item['Prefix'].rstrip('/')}"
                for item in page.get("CommonPrefixes", [])
            ]
    return sorted(children)


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
        with s3_errors(str(location)):
            s3_client().delete_objects(Bucket=bucket, Delete={"Objects": batch})
    # Filer-backed stores (the local SeaweedFS) keep the emptied folders and go on listing
    # them as common prefixes, so Triton would still see a model or version folder.
    # Deleting a folder's own key removes it there and is a no-op on plain S3.
    with s3_errors(str(location)):
        for folder in _folders_under(prefix, [split_s3(k)[1] for k in keys]):
            s3_client().delete_object(Bucket=bucket, Key=folder)
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
