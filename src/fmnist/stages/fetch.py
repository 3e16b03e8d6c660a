"""Stage `fetch`: put the four original Fashion-MNIST IDX files, verified, uncompressed, into data/raw/.

Sources (`fetch.source`):
- `auto`: the first verified local copy among $FMNIST_DATA_DIR and Debian's dataset-fashion-mnist, else
  kagglehub, which answers from its cache offline (the handle is pinned) or downloads.
- `kaggle`: kagglehub only.
- a directory: the files there, `.gz` or not, found at any depth.
Every file is checked by the SHA-256 of its decompressed bytes, so the output is byte-identical whatever the
source and switching sources never reruns the later stages.
"""

import errno
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import kagglehub
import requests
from kagglehub import exceptions as kaggle_errors

from fmnist.lib import files
from fmnist.lib.files import DATA_DIR_ENV, DEBIAN_DIR
from fmnist.lib.idx import RELEASE_FILES, ReleaseFile, read_maybe_gzip, sha256_hex
from fmnist.lib.params import FetchParams, load_params
from fmnist.lib.process import PipelineError

OFFLINE_HINT = (
    "to work offline set fetch.source to a directory holding the four IDX files (.gz or not), "
    f"set ${DATA_DIR_ENV}, or `apt-get install dataset-fashion-mnist`"
)
KAGGLE_ERRORS = (
    requests.RequestException,  # no network, timeouts; KaggleApiHTTPError (401/403/404) is one too
    kaggle_errors.CredentialError,
    kaggle_errors.UnauthenticatedError,
    kaggle_errors.DataCorruptionError,
    kaggle_errors.BackendError,
    kaggle_errors.NotFoundError,
    OSError,  # kagglehub writing its cache (LOCAL_STORAGE_ERRNOS) or reading a broken download
    ValueError,  # kagglehub: "Unsupported archive type." (the download is no zip), or an invalid kaggle.json
    zipfile.BadZipFile,  # a damaged zip: "Bad CRC-32 for file ..."
    zlib.error,  # a damaged deflate stream inside the zip
    EOFError,  # a truncated member
    tarfile.TarError,
)


LOCAL_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


class FetchError(PipelineError):
    """No source gave the four verified release files."""


def find_file(directory: Path, name: str) -> Path | None:
    """The file `name` or `name.gz` in `directory` or below it (shallowest first), or None."""
    for pattern in (name, f"{name}.gz"):
        found = sorted(directory.rglob(pattern), key=lambda p: (len(p.parts), str(p)))
        if found:
            return found[0]
    return None


def read_verified(
    directory: Path, expected: Iterable[ReleaseFile] = RELEASE_FILES, refetch: str = "fetch it again"
) -> dict[str, bytes]:
    """The decompressed bytes of every expected file in `directory`, each checked by size and SHA-256.

    `refetch` ends the message for a file that fails its check: how to get a good copy.
    """
    if not directory.is_dir():
        raise FetchError(f"{directory} is not a directory; {OFFLINE_HINT}")
    contents = {}
    for release in expected:
        path = find_file(directory, release.name)
        if path is None:
            raise FetchError(f"{release.name}[.gz] not found in {directory}; {OFFLINE_HINT}")
        data = read_maybe_gzip(path)
        if len(data) != release.size or sha256_hex(data) != release.sha256:
            raise FetchError(
                f"{path} does not match the original release (size {len(data)}, expected {release.size}, "
                f"or SHA-256 differs): the file is corrupt or from another data set; {refetch}"
            )
        contents[release.name] = data
    return contents


def download_with_kagglehub(handle: str) -> Path:
    """The directory kagglehub gives for the pinned `handle`: its cache offline, else a download."""
    try:
        return Path(kagglehub.dataset_download(handle))
    except KAGGLE_ERRORS as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, OSError) and exc.errno in LOCAL_STORAGE_ERRNOS:  # this machine's disk, not Kaggle
            raise FetchError(
                f"kagglehub could not store {handle} ({reason}); free space or fix the permissions of its cache "
                f"($KAGGLEHUB_CACHE, default ~/.cache/kagglehub), or {OFFLINE_HINT}"
            ) from exc
        raise FetchError(
            f"Kaggle download of {handle} failed ({reason}); check the network and Kaggle credentials "
            f"(KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY), or {OFFLINE_HINT}"
        ) from exc


def read_from_kaggle(handle: str, expected: Iterable[ReleaseFile]) -> tuple[str, dict[str, bytes]]:
    """(a description, the verified contents) of kagglehub's copy of `handle`.

    kagglehub answers later calls from that same copy, so fetching again cannot replace a bad one: deleting it can.
    """
    directory = download_with_kagglehub(handle)
    refetch = f"delete {directory} so that kagglehub downloads it again, or {OFFLINE_HINT}"
    return f"Kaggle {handle} ({directory})", read_verified(directory, expected, refetch)


def local_candidates(env: Mapping[str, str]) -> list[Path]:
    """Local directories `auto` tries, in order."""
    candidates = [Path(env[DATA_DIR_ENV])] if env.get(DATA_DIR_ENV) else []
    return [*candidates, DEBIAN_DIR]


def resolve_release(
    params: FetchParams, env: Mapping[str, str], expected: Iterable[ReleaseFile] = RELEASE_FILES
) -> tuple[str, dict[str, bytes]]:
    """(a description of the source used, the verified file contents) for `fetch.source`."""
    expected = tuple(expected)
    if params.source == "kaggle":
        return read_from_kaggle(params.kaggle_handle, expected)
    if params.source != "auto":
        return params.source, read_verified(Path(params.source), expected)
    for directory in local_candidates(env):
        if directory.is_dir():
            try:
                return str(directory), read_verified(directory, expected)
            except FetchError as exc:
                print(f"fetch: skipping {directory}: {exc}")
    return read_from_kaggle(params.kaggle_handle, expected)


def write_release(contents: Mapping[str, bytes], target: Path = files.RAW_DIR) -> None:
    """Replace `target` with a directory of exactly these files, atomically."""
    with files.atomic_dir(target) as tmp:
        for name, data in contents.items():
            (tmp / name).write_bytes(data)


def main() -> None:
    params = load_params().fetch
    source, contents = resolve_release(params, os.environ)
    write_release(contents)
    print(f"fetch: {len(contents)} verified files from {source} -> {files.RAW_DIR}")
