"""Where files live: a local path or an s3://bucket/key, read, written, listed and published alike.

S3 goes through boto3, which reads the AWS_* settings itself (credentials, region, and
AWS_ENDPOINT_URL_S3 for S3-compatible servers); nothing here reads the environment. boto3 is
imported on first use: the serving process imports this module through the prediction log.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import DataError

S3_SCHEME = "s3://"
READ_THREADS = 16  # files read at once by `read_many`


def in_s3(location: str) -> bool:
    return location.startswith(S3_SCHEME)


def split_s3(location: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// object; DataError naming the location when either is missing."""
    parsed = urlparse(location)
    if not parsed.netloc or not parsed.path.strip("/"):
        raise DataError(f"{location}: an S3 location needs a bucket and a key, s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


def join(folder: str, name: str) -> str:
    """`name` inside a local folder or under an s3:// prefix (always with "/", as S3 keys are)."""
    return f"{folder.rstrip('/')}/{name}"


@functools.cache
def s3_client() -> Any:
    """The process's boto3 S3 client, made on first use.

    Making a client takes tens of milliseconds, and a day of prediction log is thousands of small
    files; boto3 clients may be shared between threads. The AWS_* settings are read when it is made:
    a process that changes them (a test switching S3 servers) calls `s3_client.cache_clear()`.
    """
    import boto3

    return boto3.client("s3")


def read_bytes(location: str) -> bytes:
    """A file's content; DataError naming it when it is missing or S3 refuses."""
    if in_s3(location):
        bucket, key = split_s3(location)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            raise DataError(f"{location}: cannot read from S3: {error}") from error
    try:
        return Path(location).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{location}: file not found") from None


def version_id(location: str) -> str | None:
    """The current version id of an s3:// object; None when its bucket never kept versions. S3 says
    "null" for an object written while versioning was off or suspended: such a version is
    overwritten in place, and only the data's fingerprint tells its contents apart."""
    bucket, key = split_s3(location)
    try:
        return s3_client().head_object(Bucket=bucket, Key=key).get("VersionId")
    except Exception as error:
        raise DataError(f"{location}: cannot read from S3: {error}") from error


def read_many(locations: list[str]) -> Iterator[tuple[str, bytes]]:
    """Each file with its content, in order, READ_THREADS at a time: a day of log from several
    replicas is thousands of small files, and each S3 read mostly waits on the network."""
    with ThreadPoolExecutor(READ_THREADS) as pool:
        yield from zip(locations, pool.map(read_bytes, locations), strict=True)


def write_bytes(location: str, content: bytes) -> None:
    """Write a whole file, creating local folders. It appears whole or not at all: a local file is
    written aside, then renamed (so a reader listing the folder never meets half a file); an S3
    put is atomic anyway."""
    if in_s3(location):
        bucket, key = split_s3(location)
        s3_client().put_object(Bucket=bucket, Key=key, Body=content)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)


def publish(local: Path, location: str) -> None:
    """Move a finished local file to its destination: an s3:// URI (upload) or a local path."""
    if in_s3(location):
        bucket, key = split_s3(location)
        s3_client().upload_file(str(local), bucket, key)
        return
    destination = Path(location)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, destination)


def download(location: str, local: Path) -> None:
    """Copy an s3:// object to a local file (streamed: it may be larger than memory)."""
    bucket, key = split_s3(location)
    try:
        s3_client().download_file(bucket, key, str(local))
    except Exception as error:
        raise DataError(f"{location}: cannot read from S3: {error}") from error


def require_folder(location: str, what: str) -> None:
    """DataError when a local folder is missing. S3 has no folders: an empty prefix is no error."""
    if not in_s3(location) and not Path(location).is_dir():
        raise DataError(f"{location}: {what} folder not found")


def files(folder: str) -> list[str]:
    """Every file under a local folder or an s3:// prefix, at any depth, sorted; none when the
    folder is missing."""
    if in_s3(folder):
        return sorted(_s3_keys(folder))
    return sorted(str(path) for path in Path(folder).rglob("*") if path.is_file())


def _s3_keys(folder: str) -> Iterator[str]:
    """Every object under an s3://bucket/prefix/ (a folder: the prefix always ends with a slash)."""
    bucket, prefix = split_s3(folder.rstrip("/") + "/")
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:
            for item in page.get("Contents", []):
                yield f"{S3_SCHEME}{bucket}/{item['Key']}"
    except Exception as error:
        raise DataError(f"{folder}: cannot list S3: {error}") from error
