"""DVC remotes that are real servers on 127.0.0.1: SeaweedFS's S3 gateway and OpenSSH's sshd (tests/servers.py).

Each remote is set up as the workflows do it: a committed `.dvc/config` names it, and `.github/dvc-remote.sh`
turns the workflows' secrets (environment variables) into credentials, bounds its timeouts and checks it. Then
the round trips (push, fresh clone, pull), the registry and sweeps go through it, and its faults (refused
credentials, a missing bucket, an endpoint that refuses or ignores connections, a server killed in the middle
of a push, a corrupted object) must each end in one clear line, in bounded time, with nothing lost or damaged.
"""

import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.apps.registry import ARTIFACT
from fmnist.lib import files
from tests.helpers import (
    DVC_UP_TO_DATE,
    REPO_ROOT,
    VENV_BIN,
    copy_repo,
    git_clone,
    git_commit,
    init_git_dvc,
    set_param,
    stages_run,
)
from tests.servers import (
    Blackhole,
    SeaweedS3,
    SSHServer,
    refusing_port,
    s3_server,
    silent_port,
    ssh_server,
    wait_for,
)
from tests.test_remote import CACHED_OUTS, MODEL, contents, locked_md5

pytestmark = pytest.mark.slow
__all__ = ["s3_server", "ssh_server"]  # fixtures, used by name

REMOTE_STEP = REPO_ROOT / ".github" / "dvc-remote.sh"
COMMAND_TIMEOUT = 600  # seconds for any one command: a hang fails the test instead of holding CI
FAULT_BOUND = 45  # seconds for a failing check, push or pull with dvc-remote.sh's timeouts (a few here)


def sh(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with the test environment's tools first on PATH, within COMMAND_TIMEOUT; output as text."""
    full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `repo`, with the repo's own src/ importable."""
    return sh(["dvc", *args], repo, {"PYTHONPATH": str(repo / "src"), **(env or {})}, check)


def timed_dvc(repo: Path, *args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """`dvc ARGS` expected to fail: its result and how long it took."""
    start = time.monotonic()
    result = dvc(repo, *args, env=env, check=False)
    return result, time.monotonic() - start


@dataclass
class Step:
    """What `.github/dvc-remote.sh` did in a repository: its run, its step outputs and the env it exported."""

    result: subprocess.CompletedProcess
    outputs: dict[str, str]
    github_env: dict[str, str]


def remote_step(repo: Path, env: dict[str, str]) -> Step:
    """Run `.github/dvc-remote.sh --no-install` in `repo` as a workflow step would, with `env` as its secrets."""
    runner = repo.parent / f"{repo.name}-runner"  # $RUNNER_TEMP and the step's files, outside the repository
    runner.mkdir(exist_ok=True)
    files = {"GITHUB_OUTPUT": runner / "output", "GITHUB_ENV": runner / "env"}
    for path in files.values():
        path.write_text("")
    step_env = {**env, "PYTHONPATH": str(repo / "src"), "RUNNER_TEMP": str(runner)}
    step_env.update({key: str(path) for key, path in files.items()})
    result = sh(["bash", str(REMOTE_STEP), "--no-install"], repo, step_env, check=False)

    def pairs(path: Path) -> dict[str, str]:
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    return Step(result, pairs(files["GITHUB_OUTPUT"]), pairs(files["GITHUB_ENV"]))


def set_up_step(repo: Path, secrets: dict[str, str]) -> Step:
    """dvc-remote.sh in `repo`, which must pass its check; its run."""
    step = remote_step(repo, secrets)
    assert step.result.returncode == 0, step.result.stderr
    assert "reachable, credentials accepted" in step.result.stdout
    return step


def set_up(repo: Path, secrets: dict[str, str]) -> dict[str, str]:
    """dvc-remote.sh in `repo`, which must pass its check; the environment later steps get (secrets + its env)."""
    return {**secrets, **set_up_step(repo, secrets).github_env}


def workspace_state(repo: Path) -> dict[str, tuple[int, int, int]]:
    """{path: (size, mtime, mode)} of every file in the workspace and the DVC cache (.git and .dvc/tmp left out,
    where DVC keeps its logs and locks)."""
    state = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo).as_posix()
        if relative.startswith((".git/", ".dvc/tmp/")) or not path.is_file():
            continue
        stat = path.stat()
        state[relative] = (stat.st_size, stat.st_mtime_ns, stat.st_mode)
    return state


def assert_same_outputs(repo_b: Path, repo_a: Path) -> None:
    """B has A's cached outputs byte for byte, and the same metrics (files in git, which dvc.lock hashes)."""
    for out in (*CACHED_OUTS, "metrics"):
        assert contents(repo_b, out) == contents(repo_a, out), out
        assert contents(repo_b, out), out


def fresh_clone_pulls(repo_a: Path, dest: Path, secrets: dict[str, str]) -> Path:
    """A fresh clone of A, set up by dvc-remote.sh, pulls everything: clean status, nothing to rerun."""
    repo_b = git_clone(repo_a, dest)
    assert not (repo_b / MODEL).exists()
    env = set_up(repo_b, secrets)
    dvc(repo_b, "pull", env=env)
    assert dvc(repo_b, "status", env=env).stdout.strip() == DVC_UP_TO_DATE
    assert "are in sync" in dvc(repo_b, "status", "--cloud", env=env).stdout
    assert sh(["git", "status", "--porcelain"], repo_b).stdout == ""
    assert_same_outputs(repo_b, repo_a)
    return repo_b


def new_bucket(server: SeaweedS3) -> str:
    """A bucket of its own for one test."""
    return server.make_bucket(f"fmnist-{uuid.uuid4().hex[:12]}")


def add_remote(repo: Path, url: str, **options: object) -> None:
    """Commit the default remote `store` to `repo`'s .dvc/config, as `dvc remote add -d store URL` and `dvc remote
    modify store OPTION VALUE` would (in process: each `dvc` command costs a second or more to start)."""
    from dvc.config import Config

    with Config(str(repo / ".dvc")).edit("repo") as config:
        config["core"]["remote"] = "store"
        config["remote"]["store"] = {"url": url, **options}
    git_commit(repo, f"DVC remote {url}")


def use_s3(repo: Path, server: SeaweedS3, bucket: str) -> None:
    """Commit an s3:// default remote on `server` to `repo`, as a maintainer would (docs/remotes.md)."""
    add_remote(repo, f"s3://{bucket}/fmnist", endpointurl=server.endpoint, verify=True)


@dataclass
class S3Repo:
    """Clone A of the tiny pipeline with an S3 default remote, set up by dvc-remote.sh and pushed."""

    repo: Path
    env: dict[str, str]  # what its later steps get: the secrets and dvc-remote.sh's exports
    bucket: str
    step: Step  # dvc-remote.sh's run


@pytest.fixture(scope="module")
def s3_pushed(reproduced_repo: Path, s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> S3Repo:
    """Clone A, pushed once for the module to a bucket of its own (read-only: tests use `s3_repo`)."""
    repo = copy_repo(reproduced_repo, tmp_path_factory.mktemp("s3-pushed") / "a")
    bucket = new_bucket(s3_server)
    use_s3(repo, s3_server, bucket)
    step = remote_step(repo, s3_server.env())
    assert step.result.returncode == 0, step.result.stderr
    env = {**s3_server.env(), **step.github_env}
    push = dvc(repo, "push", env=env)
    assert "files pushed" in push.stdout
    return S3Repo(repo, env, bucket, step)


@pytest.fixture
def s3_repo(s3_pushed: S3Repo, tmp_path: Path) -> S3Repo:
    """A private copy of clone A (its workspace, cache, config.local and git history), whose bucket has it all."""
    copy = copy_repo(s3_pushed.repo, tmp_path / "a")
    return dataclasses.replace(s3_pushed, repo=copy)


def corrupt_bytes(data: bytes) -> bytes:
    """`data` with 7 bytes in the middle inverted: the same size, so only a checksum can tell."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 7]) + data[middle + 7 :]


def object_key(bucket: str, md5: str) -> str:
    """Where DVC 3 keeps the object with this md5 under the remote s3://BUCKET/fmnist."""
    return f"{bucket}/fmnist/files/md5/{md5[:2]}/{md5[2:]}"


# Round trips.


def test_s3_push_then_a_fresh_clone_pulls_the_same_outputs_and_metrics(s3_repo, s3_server, tmp_path):
    repo_a, bucket, step = s3_repo.repo, s3_repo.bucket, s3_repo.step
    assert "DVC remote: store s3://" in step.result.stdout
    assert step.outputs == {"name": "store", "url": f"s3://{bucket}/fmnist"}
    assert step.github_env == {"AWS_MAX_ATTEMPTS": "2"}
    local = (repo_a / ".dvc" / "config.local").read_text()
    assert "connect_timeout = 5" in local and "read_timeout = 60" in local
    assert SeaweedS3.SECRET_KEY not in step.result.stdout + step.result.stderr + local
    assert s3_server.client().exists(object_key(bucket, locked_md5(repo_a, MODEL)))

    fresh_clone_pulls(repo_a, tmp_path / "b", s3_server.env())


def test_s3_registry_fetches_by_stage_and_fmnist_predicts_with_it(s3_repo, s3_server, tmp_path):
    repo_a, env = s3_repo.repo, s3_repo.env
    gto = str(VENV_BIN / "gto")
    sh([gto, "register", ARTIFACT, "--version", "v1.0.0"], repo_a)
    sh([gto, "assign", ARTIFACT, "--version", "v1.0.0", "--stage", "prod"], repo_a)
    model = (repo_a / MODEL).read_bytes()
    shutil.rmtree(repo_a / ".dvc" / "cache")  # the model can only come from the bucket now

    fetched = tmp_path / "fetched.keras"
    get = dvc(tmp_path, "artifacts", "get", str(repo_a), ARTIFACT, "--stage", "prod", "-o", str(fetched), env=env)
    assert get.returncode == 0 and fetched.read_bytes() == model

    images = np.load(repo_a / "data" / "prepared" / "test_images.npy")
    Image.fromarray(images[0][:, :, 0]).save(tmp_path / "garment.png")
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ["predict", "garment.png", "--model-repo", str(repo_a), "--model-stage", "prod"]
    predicted = sh([str(VENV_BIN / "fmnist"), *args], tmp_path, {**env, **cache})
    assert predicted.stdout.splitlines()[1].startswith("garment.png")
    [used] = (tmp_path / "cache").rglob("model.keras")
    assert used.read_bytes() == model


def test_s3_sweep_two_runners_share_experiments_through_the_bucket_and_a_third_clone_applies_the_best(
    s3_repo, s3_server, tmp_path
):
    # As the sweep workflow does it: a bare git repository stands in for GitHub, three clones are two runners and
    # the collecting job, and the experiments' outputs travel through the bucket.
    repo_a, bucket = s3_repo.repo, s3_repo.bucket
    origin = tmp_path / "origin.git"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)  # clones check out main
    sh(["git", "remote", "add", "origin", str(origin)], repo_a)
    sh(["git", "push", "-q", "origin", "main"], repo_a)

    def machine(name: str) -> tuple[Path, dict[str, str]]:
        """A runner: a fresh clone with a git identity, set up by dvc-remote.sh."""
        repo = git_clone(origin, tmp_path / name)
        sh(["git", "config", "user.email", "runner@example.com"], repo)
        sh(["git", "config", "user.name", "runner"], repo)
        return repo, set_up(repo, s3_server.env())

    def fmnist(repo: Path, runner_env: dict[str, str], *args: str) -> str:
        """`fmnist ARGS` of `repo`'s own code there; its stdout (for `sweep collect`, the table alone)."""
        return sh(["python", "-m", "fmnist.cli", *args], repo, {**runner_env, "PYTHONPATH": str(repo / "src")}).stdout

    # Sets that need no training: the first predicts with mirror averaging (evaluate and the stages after it rerun,
    # a new predictions file for the bucket), the second redraws the plots (plot_errors alone).
    sets = json.dumps([["inference.tta=flip"], ["plot_errors.seed=1", "plot_errors.n_random=4"]])
    for number in (1, 2):  # each runner: a fresh clone, its share of the sets, pushed
        runner, runner_env = machine(f"runner{number}")
        args = ("sweep", "run", "--sets", sets, "--prefix", "t", "--worker", f"{number}/2")
        assert f"sweep: ran and pushed t-{number}" in fmnist(runner, runner_env, *args)
        assert sh(["git", "status", "--porcelain"], runner).stdout == ""  # --temp left the workspace alone

    collector, collector_env = machine("collector")
    table = fmnist(collector, collector_env, "sweep", "collect", "--prefix", "t").splitlines()
    assert table[0].startswith("| rank | experiment |"), table
    rows = [line for line in table[2:] if line.startswith("| ")]  # the ranking; a note on the choice follows
    ranked = {line.split(" | ")[1]: line for line in rows}
    assert sorted(ranked) == ["t-1", "t-2"], table
    # Each row names what its set changed, in params.yaml's order.
    assert "inference.tta=flip |" in ranked["t-1"] and "plot_errors.n_random=4, plot_errors.seed=1" in ranked["t-2"]
    listed = dvc(collector, "exp", "show", "--csv", env=collector_env).stdout.splitlines()  # DVC's own view
    header = listed[0].split(",")
    shown_rows = {line.split(",")[header.index("Experiment")]: line.split(",") for line in listed[1:]}
    for name, line in ranked.items():  # the table's numbers are DVC's
        # accuracy is a key of more than one metrics file: DVC names the column by file and key
        shown = float(shown_rows[name][header.index(f"{files.VAL_METRICS_FILE.as_posix()}:accuracy")])
        assert shown == pytest.approx(float(line.split(" | ")[2]), abs=1e-4)

    # t-1's own predictions, which only its runner made: `sweep collect` pulled them from the bucket with its ref.
    predictions = files.PREDICTIONS_FILE.parent.as_posix()  # evaluate's directory of per-image arrays
    [ref] = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps/**/t-1"], collector).stdout.split()
    md5 = locked_md5(collector, predictions, rev=ref)
    assert md5 != locked_md5(repo_a, predictions)
    assert s3_server.client().exists(object_key(bucket, md5))  # the directory's listing (md5 ".dir")

    best, best_accuracy = rows[0].split(" | ")[1], float(rows[0].split(" | ")[2])
    dvc(collector, "exp", "apply", best, env=collector_env)
    dvc(collector, "pull", env=collector_env)  # the best experiment's outputs, from the bucket
    assert dvc(collector, "status", env=collector_env).stdout.strip() == DVC_UP_TO_DATE
    assert round(json.loads((collector / "metrics/val.json").read_text())["accuracy"], 4) == best_accuracy
    # Up to date above: every output, t-1's predictions among them, has the content dvc.lock records.
    assert (collector / files.PREDICTIONS_FILE).is_file()
    assert (collector / MODEL).is_file()


def test_ssh_push_then_a_fresh_clone_pulls_the_same_outputs_and_metrics(pipeline_copy, ssh_server, tmp_path):
    secrets = ssh_secrets(ssh_server, tmp_path)
    storage = tmp_path / "ssh-storage"
    use_ssh(pipeline_copy, ssh_server, storage)
    env = set_up(pipeline_copy, secrets)
    local = (pipeline_copy / ".dvc" / "config.local").read_text()
    assert "keyfile = " in local and "timeout = 20" in local
    assert "files pushed" in dvc(pipeline_copy, "push", env=env).stdout
    assert (storage / "files" / "md5" / locked_md5(pipeline_copy, MODEL)[:2]).is_dir()  # on the server's disk
    assert "Accepted publickey" in ssh_server.log_path.read_text()

    fresh_clone_pulls(pipeline_copy, tmp_path / "b", secrets)


def ssh_secrets(server: SSHServer, tmp_path: Path) -> dict[str, str]:
    """The workflows' secret for an ssh:// remote, and a HOME of its own (asyncssh reads ~/.ssh)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"DVC_SSH_PRIVATE_KEY": server.user_key.read_text(), "HOME": str(home)}


def use_ssh(repo: Path, server: SSHServer, storage: Path) -> None:
    """Commit an ssh:// default remote on `server` to `repo`."""
    add_remote(repo, server.url(storage), verify=True)


# Faults: one clear line naming the remote and what to check, in bounded time, nothing changed.


def assert_one_error_line(step: Step, *expected: str) -> str:
    """dvc-remote.sh failed with exactly one line on stderr, naming the remote and containing `expected`."""
    assert step.result.returncode != 0
    lines = step.result.stderr.strip().splitlines()
    assert len(lines) == 1, step.result.stderr
    [line] = lines
    assert line.startswith("error: DVC remote 'store' (") and "Traceback" not in line
    for text in expected:
        assert text in line, line
    return line


def fails_and_changes_nothing(repo: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`dvc COMMAND` fails in bounded time and leaves the workspace and the cache as they were."""
    before = workspace_state(repo)
    result, seconds = timed_dvc(repo, command, env=env)
    assert result.returncode != 0, result.stdout
    assert seconds < FAULT_BOUND, f"dvc {command} took {seconds:.0f} s"
    assert workspace_state(repo) == before
    assert SeaweedS3.SECRET_KEY not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def data_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository with a small dataset and a model file in its cache (no pipeline): what a fault
    must leave alone. Read-only: tests use `data_repo`."""
    repo = tmp_path_factory.mktemp("data") / "a"
    repo.mkdir()
    init_git_dvc(repo)
    rng = random.Random(1)
    (repo / "data").mkdir()
    for index in range(20):
        (repo / "data" / f"{index:02d}.bin").write_bytes(rng.randbytes(10_000))
    (repo / "model.bin").write_bytes(rng.randbytes(50_000))
    dvc(repo, "add", "data", "model.bin")
    git_commit(repo, "a dataset and a model")
    return repo


@pytest.fixture
def data_repo(data_template: Path, tmp_path: Path) -> Path:
    """A private copy of `data_template`."""
    return copy_repo(data_template, tmp_path / "a")


S3_FAULTS = {
    # fault: (what the one line must say, whether dvc pull/push run too). The check looks the bucket up with a HEAD
    # request (DVC's ls-url), whose 403 carries no error code: a wrong secret and an unknown key read the same.
    "wrong-secret": (["credentials were refused (403)", "AWS_SECRET_ACCESS_KEY"], True),
    "unknown-key": (["credentials were refused (403)", "AWS_ACCESS_KEY_ID"], True),
    "missing-bucket": (["the bucket does not exist", "url in .dvc/config"], True),
    "refused": (["cannot reach http://127.0.0.1:", "check endpointurl in .dvc/config"], True),
    # An endpoint that drops connections: the check stops at the first connect timeout (5 s). DVC's own pull or
    # push waits connect_timeout x AWS_MAX_ATTEMPTS for every batch of objects and goes on with the next one
    # (measured: 114 s for the tiny pipeline's 21 objects on 2 loaded cores), so they are not run here: the
    # workflows never get to them, dvc-remote.sh fails first.
    "blackhole": (["cannot reach http://127.0.0.1:", "Connect timeout", "check endpointurl"], False),
    # An endpoint that takes connections and never answers, with `read_timeout 10` committed: s3fs would repeat the
    # timed-out read 5 times (botocore twice each, AWS_MAX_ATTEMPTS=2) and meet the check's 60 s deadline; the
    # check gives the probe one attempt's connect and read timeouts and a margin (5 + 10 + 10 s) instead.
    "silent": (["cannot reach http://127.0.0.1:", "no answer within 25 s", "check endpointurl"], False),
}


@pytest.mark.parametrize("fault", list(S3_FAULTS))
def test_s3_fault_is_one_line_in_bounded_time_and_changes_nothing(fault, s3_server, data_repo, tmp_path):
    expected, run_dvc = S3_FAULTS[fault]
    repo_a, secrets = data_repo, s3_server.env()
    bucket = new_bucket(s3_server)
    with contextlib.ExitStack() as stack:
        url, endpoint, options = f"s3://{bucket}/fmnist", s3_server.endpoint, {}
        if fault == "wrong-secret":
            secrets["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
        elif fault == "unknown-key":
            secrets["AWS_ACCESS_KEY_ID"] = "nobody"
        elif fault == "missing-bucket":
            url = "s3://fmnist-no-such-bucket/fmnist"
        elif fault == "refused":
            endpoint = f"http://127.0.0.1:{stack.enter_context(refusing_port())}"
        elif fault == "blackhole":
            endpoint = f"http://127.0.0.1:{stack.enter_context(Blackhole()).port}"
        else:
            endpoint, options = f"http://127.0.0.1:{stack.enter_context(silent_port())}", {"read_timeout": 10}
        add_remote(repo_a, url, endpointurl=endpoint, verify=True, **options)  # committed by the maintainer

        repo_b = git_clone(repo_a, tmp_path / "b")
        started = time.monotonic()
        step = remote_step(repo_b, secrets)
        assert time.monotonic() - started < FAULT_BOUND
        line = assert_one_error_line(step, *expected)
        assert SeaweedS3.SECRET_KEY not in line and "not-the-secret" not in line
        if run_dvc:
            env = {**secrets, **step.github_env}
            fails_and_changes_nothing(repo_b, "pull", env)  # nothing arrives, no cache appears
            assert not (repo_b / "model.bin").exists()
            fails_and_changes_nothing(repo_a, "push", env)  # A's outputs and cache stay as they were


SSH_FAULTS = {
    "wrong-key": ["credentials were refused", "DVC_SSH_PRIVATE_KEY", "authorized_keys"],
    "refused": ["cannot reach", "check the host and port in the url in .dvc/config"],
}


@pytest.mark.parametrize("fault", list(SSH_FAULTS))
def test_ssh_fault_is_one_line_in_bounded_time_and_changes_nothing(fault, ssh_server, data_repo, tmp_path):
    repo_a = data_repo
    secrets = ssh_secrets(ssh_server, tmp_path)
    with contextlib.ExitStack() as stack:
        if fault == "wrong-key":
            other = SSHServer.make_key(tmp_path / "other_key")
            secrets["DVC_SSH_PRIVATE_KEY"] = other.read_text()
            use_ssh(repo_a, ssh_server, tmp_path / "ssh-storage")
        else:
            add_remote(repo_a, f"ssh://{ssh_server.user}@127.0.0.1:{stack.enter_context(refusing_port())}/srv/dvc")

        repo_b = git_clone(repo_a, tmp_path / "b")
        step = remote_step(repo_b, secrets)
        assert_one_error_line(step, *SSH_FAULTS[fault])
        assert "PRIVATE KEY" not in step.result.stdout + step.result.stderr
        fails_and_changes_nothing(repo_b, "pull", secrets)
        fails_and_changes_nothing(repo_a, "push", secrets)


# Faults survived: nothing lost.


def bulk_repo(path: Path) -> Path:
    """A git + DVC repository with one tracked dataset of 200 random 64 kB files (no pipeline): a push of a few
    seconds, long enough to kill the store in the middle."""
    path.mkdir()
    init_git_dvc(path)
    bulk = path / "data" / "bulk"
    bulk.mkdir(parents=True)
    rng = random.Random(0)
    for index in range(200):
        (bulk / f"{index:03d}.bin").write_bytes(rng.randbytes(64_000))
    dvc(path, "add", "data/bulk")
    git_commit(path, "a dataset")
    return path


def test_s3_store_killed_during_a_push_then_the_same_push_completes(tmp_path):
    repo_a = bulk_repo(tmp_path / "a")
    expected = contents(repo_a, "data/bulk")
    with SeaweedS3(tmp_path / "seaweedfs") as server:  # a server of its own: this test kills it
        bucket = new_bucket(server)
        use_s3(repo_a, server, bucket)
        env = set_up(repo_a, server.env())
        prefix = f"{bucket}/fmnist/files/md5"
        client = server.client()

        def stored() -> int:
            return len(client.find(prefix)) if client.exists(prefix) else 0

        full_env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **env}
        push = subprocess.Popen(
            ["dvc", "push"], cwd=repo_a, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(lambda: stored() >= 10, 60, "the first objects of the push in the bucket", interval=0.05)
            server.kill()
            out, err = push.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            if push.poll() is None:
                push.kill()
                push.communicate()
        assert push.returncode != 0, out
        # One "failed to transfer '<md5>' - Could not connect to the endpoint URL: ..." line per object that did not
        # arrive, then a last line that sums up (or, if it was uploading the directory's listing, names the endpoint)
        assert f'Could not connect to the endpoint URL: "{server.endpoint}/{bucket}/fmnist/files/md5/' in err
        *_, last = (line for line in err.splitlines() if line.startswith("ERROR:"))
        assert re.fullmatch(r"ERROR: failed to push data to the cloud - \d+ files failed to upload", last) or (
            last.startswith(f'ERROR: unexpected error - Could not connect to the endpoint URL: "{server.endpoint}/')
        ), err
        down = remote_step(repo_a, server.env())
        assert_one_error_line(down, f"cannot reach {server.endpoint}", "that the server is up")

        server.start()
        arrived = stored()
        pushed = dvc(repo_a, "push", env=env).stdout
        assert "are in sync" in dvc(repo_a, "status", "--cloud", env=env).stdout
        total = stored()
        assert 10 <= arrived < total - 50  # the push was cut off well before its end
        assert f"{total - arrived} files pushed" in pushed  # the rest, nothing twice

        repo_b = git_clone(repo_a, tmp_path / "b")
        dvc(repo_b, "pull", env=set_up(repo_b, server.env()))
        assert dvc(repo_b, "status", env=env).stdout.strip() == DVC_UP_TO_DATE
        assert contents(repo_b, "data/bulk") == expected


def test_s3_corrupted_object_is_refused_with_verify_and_taken_without(s3_repo, s3_server, tmp_path):
    repo_a = s3_repo.repo
    bucket = new_bucket(s3_server)  # of its own: this test damages what is in it
    use_s3(repo_a, s3_server, bucket)
    assert "1 file pushed" in dvc(repo_a, "push", MODEL, env=s3_repo.env).stdout
    md5 = locked_md5(repo_a, MODEL)
    client = s3_server.client()
    key = object_key(bucket, md5)
    good = client.cat(key)
    client.pipe(key, corrupt_bytes(good))  # the same size: only a checksum can tell

    # verify true, as docs/remotes.md sets it: DVC hashes what it downloads, drops the object, fails the pull
    repo_c = git_clone(repo_a, tmp_path / "c")
    env = set_up(repo_c, s3_server.env())
    pull = dvc(repo_c, "pull", MODEL, env=env, check=False)
    assert pull.returncode == 1
    assert "Checkout failed for following targets:\nmodels/model.keras" in pull.stderr
    cached = repo_c / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    assert not (repo_c / MODEL).exists() and not cached.exists()  # nothing corrupt in the workspace or cache

    # verify false: DVC trusts the store, and the corrupted bytes are checked out without a word
    repo_d = git_clone(repo_a, tmp_path / "d")
    dvc(repo_d, "remote", "modify", "--local", "store", "verify", "false")
    dvc(repo_d, "pull", MODEL, env=set_up(repo_d, s3_server.env()))
    assert (repo_d / MODEL).read_bytes() == corrupt_bytes(good) != good

    # The repair of docs/remotes.md: delete the object, push it again from a clone that has it, pull again.
    client.rm(key)
    assert "1 file pushed" in dvc(repo_a, "push", MODEL, env=s3_repo.env).stdout
    dvc(repo_c, "pull", MODEL, env=env)
    assert (repo_c / MODEL).read_bytes() == good


def test_s3_a_second_clone_restores_a_run_from_the_run_cache(s3_repo, tmp_path):
    # A trains a change it does not commit and shares the run; B, a clone of A's commit with the same change,
    # restores train and evaluate from the bucket's run-cache without running them, with A's metrics and plots.
    # DVC's own `dvc push --run-cache` is not enough: a clone then trains again (fmnist.tools.remote's push says why).
    repo_a, env = s3_repo.repo, s3_repo.env
    assert "no run-cache yet" in s3_repo.step.result.stdout  # the check, before anything was pushed
    repo_b = git_clone(repo_a, tmp_path / "b")
    set_param(repo_a, "train", "epochs", 1)
    trained = ["train", "calibrate", "evaluate", "export", "plot_errors"]
    assert stages_run(dvc(repo_a, "repro", env=env).stdout) == trained
    dvc(repo_a, "push", "--run-cache", env=env)
    set_param(repo_b, "train", "epochs", 1)
    idiom = copy_repo(repo_b, tmp_path / "b-idiom")
    dvc(idiom, "pull", "--run-cache", env=env)
    assert stages_run(dvc(idiom, "repro", "--pull", "train", env=env).stdout) == ["train"]  # DVC's idiom: trained
    before = sh(["git", "status", "--porcelain"], repo_a).stdout
    pushed = sh([str(VENV_BIN / "fmnist"), "remote", "push"], repo_a, {**env, "PYTHONPATH": str(repo_a / "src")})
    assert "files sent" in pushed.stdout
    assert sh(["git", "status", "--porcelain"], repo_a).stdout == before  # nothing left behind in A
    assert "it holds a run-cache" in set_up_step(repo_b, env).result.stdout
    dvc(repo_b, "pull", "--run-cache", env=env)
    restored = dvc(repo_b, "repro", "--pull", env=env).stdout  # --pull: fetches what a run record restores
    assert stages_run(restored) == [] and "Stage 'train' is cached - skipping run" in restored, restored
    for stage in trained[1:3]:  # calibrate, evaluate
        assert f"Stage '{stage}' is cached - skipping run" in restored, restored
    for out in ("metrics/val.json", "metrics/test.json", "metrics/train", "answers/test.csv", MODEL):
        assert contents(repo_b, out) == contents(repo_a, out), out
