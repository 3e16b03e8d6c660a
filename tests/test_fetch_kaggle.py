"""The Kaggle path of the `fetch` stage, for real and offline: kagglehub 1.0.3 itself runs, nothing is mocked.

Two stand-ins replace the internet:
- kagglehub's cache, pre-filled the way kagglehub leaves it after a download, which must answer with no request;
- a loopback server on 127.0.0.1:7777, where kagglesdk sends every call when KAGGLE_API_ENVIRONMENT=TEST. For a
  pinned dataset handle kagglehub makes exactly one API call,
  `POST /api/v1/datasets.DatasetApiService/DownloadDataset` with the JSON body
  {"ownerSlug", "datasetSlug", "datasetVersionNumber"}, which Kaggle answers with a redirect to a signed storage
  URL; kagglehub follows it (a GET), checks the body against the MD5 in the `x-goog-hash` header when there is one,
  saves it as `<cache>/datasets/<owner>/<slug>/<N>.archive`, extracts it (zip or tar) into
  `<cache>/datasets/<owner>/<slug>/versions/<N>/` and only then writes the completion marker
  `<cache>/datasets/<owner>/<slug>/<N>.complete`. A JSON error body `{"code": 404, ...}` becomes a
  KaggleApiHTTPError (a requests.HTTPError).

Every test gets an empty KAGGLEHUB_CACHE, a HOME without Kaggle credentials and no proxy (kagglehub and kagglesdk
read all of these at call time; the one piece of module state, credentials set by `kagglehub.login`, is reset).
"""

import base64
import errno
import hashlib
import http.server
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kagglehub.config
import pytest

from fmnist.lib.params import FetchParams
from fmnist.stages import fetch
from fmnist.stages.fetch import OFFLINE_HINT, FetchError
from tests.helpers import REPO_ROOT

HANDLE = "zalando-research/fashionmnist/versions/4"
OWNER, SLUG, VERSION = "zalando-research", "fashionmnist", 4
PORT = 7777  # kagglesdk's KaggleEnv.TEST endpoint: http://localhost:7777
DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
BLOB_PATH = "/storage/fashionmnist-4.zip"  # where the fake API redirects, as Kaggle redirects to Cloud Storage
EXPECTED_REQUEST = {"ownerSlug": OWNER, "datasetSlug": SLUG, "datasetVersionNumber": VERSION}
# Kaggle's bundle holds the four IDX files uncompressed next to CSV versions of the same data.
DECOYS = {
    "fashion-mnist_train.csv": b"label,pixel1,pixel2\n2,0,0\n9,0,0\n",
    "fashion-mnist_test.csv": b"label,pixel1,pixel2\n0,0,0\n",
}
# Anything that could send kagglehub elsewhere: real credentials, Kaggle or Colab notebook caches, proxies.
ENV_TO_CLEAR = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_DATA_PROXY_URL",
    "TBE_RUNTIME_ADDR",
    "DISABLE_KAGGLE_CACHE",
    fetch.DATA_DIR_ENV,
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def params(source: str) -> FetchParams:
    return FetchParams(source=source, kaggle_handle=HANDLE)


def kaggle_zip(contents: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip shaped like Kaggle's bundle of the data set: the IDX files and the CSV decoys, at its top level."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in {**contents, **DECOYS}.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def member_data_offset(archive: bytes, name: str) -> int:
    """Where the (compressed) bytes of member `name` start inside the zip `archive`."""
    header = zipfile.ZipFile(io.BytesIO(archive)).getinfo(name).header_offset
    name_length, extra_length = struct.unpack("<HH", archive[header + 26 : header + 30])
    return header + 30 + name_length + extra_length


def gcs_md5(data: bytes) -> str:
    """The `x-goog-hash` header Cloud Storage sends: base64 CRC32C (unchecked by kagglehub) and MD5."""
    return f"crc32c=AAAAAA==,md5={base64.b64encode(hashlib.md5(data).digest()).decode()}"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeKaggle:
    """What the loopback server answers, by (method, path), and every request it got: (method, path, headers, body)."""

    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def serve_bundle(self, archive: bytes, x_goog_hash: str | None = None) -> None:
        """Answer DownloadDataset with a redirect to `archive`, sent as Cloud Storage would (MD5 by default)."""
        self.replies[("POST", DOWNLOAD_PATH)] = Reply(302, headers={"Location": f"http://127.0.0.1:{PORT}{BLOB_PATH}"})
        headers = {"Content-Type": "application/zip", "x-goog-hash": x_goog_hash or gcs_md5(archive)}
        self.replies[("GET", BLOB_PATH)] = Reply(200, archive, headers)

    def serve_not_found(self) -> None:
        """Answer DownloadDataset as Kaggle does for a data set or version that does not exist."""
        body = json.dumps({"code": 404, "message": "Dataset not found"}).encode()
        self.replies[("POST", DOWNLOAD_PATH)] = Reply(404, body, {"Content-Type": "application/json"})


class Handler(http.server.BaseHTTPRequestHandler):
    """Records each request in the server's FakeKaggle and sends the matching Reply (500 when none is set)."""

    timeout = 5  # seconds a client may stall; never reached by requests, which sends whole requests

    def _answer(self) -> None:
        fake: FakeKaggle = self.server.fake  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake.requests.append((self.command, self.path, dict(self.headers), body))
        reply = fake.replies.get((self.command, self.path), Reply(500, b"no reply set for this request"))
        self.send_response(reply.status)
        for name, value in {**reply.headers, "Content-Length": str(len(reply.body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch) -> Path:
    """An empty kagglehub cache (returned), no credentials, kagglesdk pointed at localhost:7777, no local copies."""
    for name in ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "kagglehub-cache"
    cache.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("HOME", str(home))  # kagglesdk reads ~/.kaggle/kaggle.json and ~/.kaggle/access_token
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))  # kagglehub's kaggle.json
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setattr(kagglehub.config, "_kaggle_credentials", None)  # what kagglehub.login() would have set
    monkeypatch.setattr(fetch, "DEBIAN_DIR", tmp_path / "no-debian-copy")  # `auto` finds no local copy
    return cache


@pytest.fixture
def fake_kaggle(kaggle_env) -> Iterator[FakeKaggle]:
    """A loopback HTTP server on 127.0.0.1:7777 playing Kaggle and its storage, shut down after the test."""
    fake = FakeKaggle()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    server.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fill_cache(cache: Path, contents: dict[str, bytes], complete: bool = True) -> Path:
    """Lay out a finished kagglehub 1.0.3 download of HANDLE in `cache`; return the bundle's directory.

    The layout is kagglehub.cache's: files under datasets/<owner>/<slug>/versions/<N>/, and the empty marker file
    datasets/<owner>/<slug>/<N>.complete, without which kagglehub ignores the files and downloads again.
    """
    bundle = cache / "datasets" / OWNER / SLUG / "versions" / str(VERSION)
    bundle.mkdir(parents=True)
    for name, data in {**contents, **DECOYS}.items():
        (bundle / name).write_bytes(data)
    if complete:
        (cache / "datasets" / OWNER / SLUG / f"{VERSION}.complete").touch()
    return bundle


def completion_marker(cache: Path) -> Path:
    return cache / "datasets" / OWNER / SLUG / f"{VERSION}.complete"


def assert_one_line_naming_kaggle_and_the_alternatives(message: str) -> None:
    assert "\n" not in message
    assert "Kaggle" in message and HANDLE in message
    assert OFFLINE_HINT in message  # a directory as fetch.source, $FMNIST_DATA_DIR, or Debian's package


# --- 1. The cache: a finished download answers offline -------------------------------------------------------------


@pytest.mark.parametrize("source", ["kaggle", "auto"])
def test_a_completed_kagglehub_cache_resolves_with_no_request(source, kaggle_env, fake_kaggle, tiny_release):
    """A cached copy of the pinned version is used as is, for `kaggle` and for `auto` with no local copy: the
    IDX files are picked out of Kaggle's bundle (the CSVs ignored) and kagglehub sends not one request."""
    contents, table = tiny_release
    bundle = fill_cache(kaggle_env, contents)
    description, found = fetch.resolve_release(params(source), {}, table)
    assert found == contents
    assert description == f"Kaggle {HANDLE} ({bundle})"
    assert fake_kaggle.requests == []  # every kagglesdk call would have landed on this server


def test_a_cache_without_the_completion_marker_is_not_trusted(kaggle_env, fake_kaggle, tiny_release):
    """Files without kagglehub's completion marker (an interrupted download) are not used: kagglehub asks Kaggle,
    so the marker is what makes the cache work offline, and a failed request is a one-line FetchError."""
    contents, table = tiny_release
    fill_cache(kaggle_env, contents, complete=False)
    fake_kaggle.serve_not_found()
    with pytest.raises(FetchError) as caught:
        fetch.resolve_release(params("kaggle"), {}, table)
    assert_one_line_naming_kaggle_and_the_alternatives(str(caught.value))
    assert [(method, path) for method, path, _, _ in fake_kaggle.requests] == [("POST", DOWNLOAD_PATH)]


# --- 2. Downloads from the loopback Kaggle ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["kaggle", "auto"])
def test_a_download_gives_the_verified_files_and_is_then_cached(source, kaggle_env, fake_kaggle, tiny_release):
    """kagglehub downloads Kaggle's zip anonymously (a public data set needs no credentials), through the
    redirect, and fetch returns exactly the IDX files; a second run is answered from the cache with no request."""
    contents, table = tiny_release
    fake_kaggle.serve_bundle(kaggle_zip(contents))
    description, found = fetch.resolve_release(params(source), {}, table)
    assert found == contents
    bundle = kaggle_env / "datasets" / OWNER / SLUG / "versions" / str(VERSION)
    assert description == f"Kaggle {HANDLE} ({bundle})"
    assert sorted(p.name for p in bundle.iterdir()) == sorted({**contents, **DECOYS})
    assert completion_marker(kaggle_env).is_file()
    assert not (kaggle_env / "datasets" / OWNER / SLUG / f"{VERSION}.archive").exists()  # the zip was removed

    (method, path, headers, body), (blob_method, blob_path, _, _) = fake_kaggle.requests
    assert (method, path, blob_method, blob_path) == ("POST", DOWNLOAD_PATH, "GET", BLOB_PATH)
    assert json.loads(body) == EXPECTED_REQUEST
    assert "Authorization" not in headers

    assert fetch.resolve_release(params(source), {}, table) == (description, contents)
    assert len(fake_kaggle.requests) == 2  # the pinned handle resolved from the cache


def corrupt_md5(archive: bytes) -> tuple[bytes, str]:
    return archive, gcs_md5(archive + b"x")  # the body was damaged in transit


def not_a_zip(_: bytes) -> tuple[bytes, str]:
    page = b"<!DOCTYPE html><html><body>Please sign in to continue</body></html>"  # e.g. a captive portal
    return page, gcs_md5(page)


def bad_crc(archive_stored: bytes) -> tuple[bytes, str]:
    damaged = bytearray(archive_stored)
    damaged[member_data_offset(archive_stored, "train-labels-idx1-ubyte") + 100] ^= 0x01
    return bytes(damaged), gcs_md5(bytes(damaged))  # damaged before the hash was taken: only the zip's CRC sees it


def bad_deflate(archive: bytes) -> tuple[bytes, str]:
    damaged = bytearray(archive)
    damaged[member_data_offset(archive, "train-images-idx3-ubyte")] |= 0b110  # block type 3: invalid deflate
    return bytes(damaged), gcs_md5(bytes(damaged))


@pytest.mark.parametrize(
    ("damage", "compression", "cause", "reason"),
    [
        (corrupt_md5, zipfile.ZIP_DEFLATED, "DataCorruptionError", "The X-Goog-Hash header indicated a MD5 checksum"),
        (not_a_zip, zipfile.ZIP_DEFLATED, "ValueError", "Unsupported archive type"),
        (bad_crc, zipfile.ZIP_STORED, "BadZipFile", "Bad CRC-32 for file 'train-labels-idx1-ubyte'"),
        (bad_deflate, zipfile.ZIP_DEFLATED, "error", "while decompressing data"),  # zlib.error
    ],
    ids=["md5-mismatch", "not-a-zip", "bad-crc", "bad-deflate-stream"],
)
def test_a_damaged_download_is_a_one_line_fetch_error(
    damage, compression, cause, reason, kaggle_env, fake_kaggle, tiny_release
):
    """Whatever kagglehub raises for a damaged download (its MD5 check, an unknown archive type, zipfile's CRC
    check, zlib) becomes a FetchError naming Kaggle, kagglehub's reason and the offline alternatives, and the
    damaged download is not marked complete, so the next run downloads again."""
    contents, table = tiny_release
    body, x_goog_hash = damage(kaggle_zip(contents, compression))
    fake_kaggle.serve_bundle(body, x_goog_hash)
    with pytest.raises(FetchError) as caught:
        fetch.resolve_release(params("kaggle"), {}, table)
    message = str(caught.value)
    assert_one_line_naming_kaggle_and_the_alternatives(message)
    assert message.startswith(f"Kaggle download of {HANDLE} failed (") and reason in message
    assert type(caught.value.__cause__).__name__ == cause
    assert not completion_marker(kaggle_env).exists()


def test_a_bundle_failing_the_checksums_names_the_cache_to_delete(kaggle_env, fake_kaggle, tiny_release):
    """A download whose IDX file fails its SHA-256 is refused with a one-line FetchError that names the file,
    the offline alternatives, and kagglehub's copy to delete: kagglehub keeps answering from that copy (a rerun
    sends no request and fails the same way), and after deleting it the next run downloads a good copy."""
    contents, table = tiny_release
    name = "train-labels-idx1-ubyte"
    tampered = {**contents, name: contents[name][:-1] + bytes([(contents[name][-1] + 1) % 10])}
    fake_kaggle.serve_bundle(kaggle_zip(tampered))
    bundle = kaggle_env / "datasets" / OWNER / SLUG / "versions" / str(VERSION)
    with pytest.raises(FetchError) as caught:
        fetch.resolve_release(params("kaggle"), {}, table)
    message = str(caught.value)
    assert "\n" not in message and OFFLINE_HINT in message
    assert f"{bundle / name} does not match the original release" in message
    assert f"delete {bundle} so that kagglehub downloads it again" in message

    with pytest.raises(FetchError):
        fetch.resolve_release(params("kaggle"), {}, table)
    assert len(fake_kaggle.requests) == 2  # the bad copy came from the cache: no new download

    fake_kaggle.serve_bundle(kaggle_zip(contents))
    shutil.rmtree(bundle)  # what the message says to do
    assert fetch.resolve_release(params("kaggle"), {}, table)[1] == contents
    assert len(fake_kaggle.requests) == 4


def test_not_found_is_a_one_line_fetch_error(kaggle_env, fake_kaggle, tiny_release):
    """Kaggle's 404 (a data set or version that is not there) is a FetchError naming Kaggle, the 404 and the
    offline alternatives, after exactly the one DownloadDataset request."""
    _, table = tiny_release
    fake_kaggle.serve_not_found()
    with pytest.raises(FetchError) as caught:
        fetch.resolve_release(params("kaggle"), {}, table)
    message = str(caught.value)
    assert_one_line_naming_kaggle_and_the_alternatives(message)
    assert "404 Client Error" in message and "Resource not found" in message
    assert [(method, path) for method, path, _, _ in fake_kaggle.requests] == [("POST", DOWNLOAD_PATH)]
    assert not completion_marker(kaggle_env).exists()


def test_download_with_kagglehub_returns_the_cached_bundle(kaggle_env, fake_kaggle, tiny_release):
    """download_with_kagglehub gives kagglehub's own directory, which read_verified accepts."""
    contents, table = tiny_release
    fake_kaggle.serve_bundle(kaggle_zip(contents))
    directory = fetch.download_with_kagglehub(HANDLE)
    assert directory == kaggle_env / "datasets" / OWNER / SLUG / "versions" / str(VERSION)
    assert fetch.read_verified(directory, table) == contents


# --- 3. The stage, end to end ----------------------------------------------------------------------------------------


def test_stage_with_kaggle_not_found_exits_1_with_one_line_and_keeps_data_raw(tmp_path, kaggle_env, fake_kaggle):
    """`python -m fmnist.stages.fetch` with fetch.source: kaggle and Kaggle answering 404 exits 1 with exactly one line
    on stderr, `error: ...` naming Kaggle and the alternatives, and leaves an earlier data/raw/ untouched."""
    project = tmp_path / "project"
    project.mkdir()
    params_text = (REPO_ROOT / "params.yaml").read_text()
    assert params_text.count("source: auto") == 1
    (project / "params.yaml").write_text(params_text.replace("source: auto", "source: kaggle"))
    sentinel = project / "data" / "raw" / "keep-me"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("earlier output")
    fake_kaggle.serve_not_found()

    result = subprocess.run(
        [sys.executable, "-m", "fmnist.stages", "fetch"],
        cwd=project,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert_one_line_naming_kaggle_and_the_alternatives(result.stderr.rstrip("\n"))
    assert "404" in result.stderr
    assert [(method, path) for method, path, _, _ in fake_kaggle.requests] == [("POST", DOWNLOAD_PATH)]
    assert sorted(p.name for p in sentinel.parent.iterdir()) == ["keep-me"]
    assert sentinel.read_text() == "earlier output"
    assert sorted(p.name for p in project.iterdir()) == ["data", "params.yaml"]


def test_a_full_disk_is_reported_as_this_machines_problem_not_kaggles(monkeypatch):
    def full_disk(handle):
        raise OSError(errno.ENOSPC, "No space left on device", "/root/.cache/kagglehub/x.zip")

    monkeypatch.setattr(fetch.kagglehub, "dataset_download", full_disk)
    with pytest.raises(fetch.FetchError) as caught:
        fetch.download_with_kagglehub("zalando-research/fashionmnist/versions/4")
    assert "kagglehub could not store zalando-research/fashionmnist/versions/4 ([Errno 28] No space left" in str(
        caught.value
    )
    assert "free space or fix the permissions of its cache" in str(caught.value) and "credentials" not in str(
        caught.value
    )
