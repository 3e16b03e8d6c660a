"""`fmnist remote`: does a DVC remote answer and take its credentials (one line says what is wrong if not), and
sharing runs through it so that another machine restores them instead of training again.

    fmnist remote check [--set-default OPTION=VALUE ...] [REMOTE]   # default: the default remote
    fmnist remote push [REMOTE]   # dvc push --run-cache, and the runs' metrics and plots with it

Run in a DVC repository (.github/dvc-remote.sh runs it last). It only reads, through DVC's public `Repo.ls_url`
(`dvc ls-url URL --fs-config OPTION=VALUE`) with the remote's settings: for s3:// it looks up the bucket, then it
lists the remote's directory. Exit status 0 with one line on stdout if the remote can be used, 1 with one line on
stderr naming the remote, the problem and what to check if not. DVC's own errors for the same faults ("unexpected
error - Forbidden: An error occurred (403) when calling the HeadObject operation") name neither the remote nor the
setting to fix. It gives up after DEADLINE seconds, and on S3 after one attempt's connect and read timeouts.

--set-default OPTION=VALUE first writes the remote's OPTION to .dvc/config.local, as `dvc remote modify --local`
would, unless a config file sets it already (dvc-remote.sh bounds the remote's timeouts with it; one process
instead of one DVC start-up per option).
"""

import argparse
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from fmnist.lib.process import PipelineError

DEADLINE = 60  # seconds for the whole check, whatever the remote's timeouts say
# Per-request limits where the remote sets none: a probe wants the first failure, not DVC's patient retries.
PROBE_CONFIG = {"s3": {"connect_timeout": 5, "read_timeout": 20}, "ssh": {"timeout": 15}}
# s3fs repeats a timed-out read 5 times, and DVC lets no setting change that (docs/remotes.md): the S3 probe gets
# one attempt's connect and read timeouts, and this much for DVC to build the client and compute the request.
ATTEMPT_SLACK = 10

CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or "
    "access_key_id/secret_access_key in .dvc/config.local",
    "ssh": "DVC_SSH_PRIVATE_KEY (or keyfile in .dvc/config.local), the user in the remote's URL and that user's "
    "~/.ssh/authorized_keys on the server",
    "gs": "GCP_SERVICE_ACCOUNT_JSON (GOOGLE_APPLICATION_CREDENTIALS) or credentialpath in .dvc/config.local",
}
REFUSED_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403")
# botocore writes the code in parentheses ("An error occurred (403) when calling the HeadObject operation"): a
# bare substring would also find "403" in a port such as http://127.0.0.1:34037.
REFUSED = re.compile(r"\((" + "|".join(REFUSED_CODES) + r")\)")


class Problem(PipelineError):
    """What is wrong with the remote, and what to check."""


def chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def diagnose(exc: BaseException, protocol: str, where: str) -> str:
    """The problem and what to check, from the exception a probe of the remote raised."""
    names = {type(e).__name__ for e in chain(exc)}
    text = " ".join(one_line(e) for e in chain(exc))
    credentials = CREDENTIALS.get(protocol, "the remote's credentials in .dvc/config.local")
    if "NoCredentialsError" in names or "Unable to locate credentials" in text:
        return f"no credentials were found; set {credentials}"
    refused = REFUSED.search(text)
    if names & {"PermissionDenied", "PermissionError"} or refused:
        code = refused.group(1) if refused else "permission denied"
        return f"the credentials were refused ({code}); check {credentials}"
    if "NoSuchBucket" in text or (protocol == "s3" and "FileNotFoundError" in names):
        return f"the bucket does not exist ({one_line(exc)}); create it, or fix the bucket in the url in .dvc/config"
    unreachable = {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "TimeoutError",
        "FSTimeoutError",
        "gaierror",
        "ConnectionLost",
        "HostUnreachable",
    }
    if names & unreachable or (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)):
        setting = "endpointurl" if protocol == "s3" and where.startswith("http") else "the host and port in the url"
        return f"cannot reach {where} ({one_line(exc)}); check {setting} in .dvc/config and that the server is up"
    return f"{one_line(exc)}; check the remote's settings (`dvc remote list`, `dvc config -l`) and {credentials}"


def address(settings: dict[str, Any]) -> str:
    """Where the remote's URL points after the settings that override it (`user`, `port`): user@host:port."""
    url = urlsplit(settings["url"])
    if not url.hostname:
        return settings["url"]
    user = settings.get("user") or url.username
    port = settings.get("port") or url.port or {"ssh": 22}.get(url.scheme)
    return (f"{user}@" if user else "") + url.hostname + (f":{port}" if port else "")


def run_cache(names: list[str]) -> str:
    """Whether a remote whose top level holds `names` has DVC's run-cache (`runs/` beside `files/`), which CI
    restores runs from."""
    if "runs" in names:
        return "it holds a run-cache (`dvc pull --run-cache` restores earlier runs)"
    return "no run-cache yet: runs are not restored from it until `dvc push --run-cache` stores some"


def listing(url: str, fs_config: dict[str, Any]) -> list[str] | None:
    """The names at the top of `url`, reached with the remote settings `fs_config`; None if nothing is there."""
    from dvc.exceptions import URLMissingError
    from dvc.repo import Repo

    try:
        entries = Repo.ls_url(url, fs_config=fs_config)
    except URLMissingError:
        return None
    return [entry["path"].rstrip("/").rsplit("/", 1)[-1] for entry in entries]


def probe(protocol: str, settings: dict[str, Any], overrides: dict[str, Any]) -> str:
    """What the remote holds, read with its `settings` and the probe's `overrides`; raises what DVC raised."""
    from dvc.repo import Repo

    url = settings["url"]
    fs_config = {k: v for k, v in settings.items() if k != "url"} | overrides
    if protocol == "s3":
        bucket = urlsplit(url).netloc
        Repo.ls_url(f"s3://{bucket}", fs_config=fs_config, maxdepth=0)  # the bucket alone: a missing one raises
        return f"bucket '{bucket}' exists; {run_cache(listing(url, fs_config) or [])}"
    path = urlsplit(url).path if "://" in url else url
    names = listing(url, fs_config)
    if names is None:
        return f"{path} does not exist yet (`dvc push` creates it)"
    return f"{path} exists; {run_cache(names)}"


@contextmanager
def at_most(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after `seconds`, or when a deadline set outside it comes, if sooner."""
    outer = signal.alarm(0)  # seconds left on the deadline set outside, 0 if none
    started = time.monotonic()

    def timeout(signum: int, frame: Any) -> NoReturn:
        raise TimeoutError(f"no answer within {min(seconds, outer or seconds)} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # the outer deadline goes on where it was (an alarm of 0 would cancel it: 1 s at least)
            signal.alarm(max(1, outer - int(time.monotonic() - started)))


def check(name: str | None, defaults: dict[str, str]) -> str:
    """Probe the remote `name` (None: the default one), after setting `defaults`; what it found, or raise Problem."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(".") as repo:
            remotes = repo.config["remote"]
            name = name or repo.config["core"].get("remote")
    except DvcException as exc:
        raise Problem(f"{one_line(exc)}; run this in the repository") from None
    if not name or name not in remotes:
        known = ", ".join(remotes) or "none"
        wanted = f"DVC remote '{name}'" if name else "default DVC remote"
        raise Problem(f"no {wanted} in .dvc/config (remotes: {known}); add one with `dvc remote add -d NAME URL`")
    settings = dict(remotes[name])
    missing = {option: value for option, value in defaults.items() if option not in settings}
    if missing:
        with Repo(".") as repo, repo.config.edit("local") as local:
            local["remote"].setdefault(name, {}).update(missing)
        settings.update(missing)
    protocol = settings["url"].split("://")[0] if "://" in settings["url"] else "local"
    overrides = {k: v for k, v in PROBE_CONFIG.get(protocol, {}).items() if k not in settings}
    if protocol == "s3":
        os.environ.setdefault("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries, before s3fs's
    where = settings.get("endpointurl") or (address(settings) if protocol == "ssh" else settings["url"])
    label = f"DVC remote '{name}' ({settings['url']}" + (f" at {where})" if where != settings["url"] else ")")
    bound = DEADLINE
    if protocol == "s3":
        limits = {**settings, **overrides}
        bound = int(limits["connect_timeout"]) + int(limits["read_timeout"]) + ATTEMPT_SLACK
    try:
        with at_most(bound):
            return f"{label}: reachable, credentials accepted, {probe(protocol, settings, overrides)}"
    except Exception as exc:  # whatever DVC or the plugin raises: classified, never a traceback
        raise Problem(f"{label}: {diagnose(exc, protocol, where)}") from None


# --- push: the runs, with the `cache: false` outputs their records name --------------------------------------------
#
# Sharing DVC's run-cache so that another machine restores a run instead of training again.
#
# DVC's idiom is `dvc push --run-cache` here and `dvc pull --run-cache` + `dvc repro --pull` there. It falls short
# for this pipeline: DVC restores a run only when every output in its record is in the cache, and `dvc push
# --run-cache` sends the run records (.dvc/cache/runs) and the workspace's cached outputs, never a `cache: false`
# one (metrics and plots, which stay in git and of which the run-cache keeps a copy in the local cache only). So
# train and evaluate were never restored on another machine: it trained again (treeverse/dvc#5749;
# tests/test_remote_push.py and tests/test_remote_servers.py show it; docs/remotes.md).
#
# `push` does DVC's push, then sends those outputs with DVC's documented means only: a run record is one
# stage's entry in dvc.lock's format, whose `outs` entries are also the `outs` of a .dvc file, so a temporary .dvc
# file that lists the runs' `cache: false` outputs, each under a name of its own, is pushed like any other target.
# Nothing else is needed on the other side: `dvc pull --run-cache` and `dvc repro --pull` then restore the runs.

OUTPUT_FIELDS = ("outs", "metrics", "plots")  # where dvc.yaml declares a stage's outputs


def uncached_paths(dvc_yaml: Path) -> set[str]:
    """The outputs that dvc.yaml declares `cache: false`, as its stages write them (`metrics/val.json`)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    paths = set()
    for stage in stages.values():
        for field in OUTPUT_FIELDS:
            for entry in stage.get(field) or []:
                if isinstance(entry, dict):  # `- path: {cache: false, ...}`; a bare path is cached
                    paths |= {path for path, options in entry.items() if (options or {}).get("cache") is False}
    return paths


def run_records(runs: Path) -> Iterator[dict[str, Any]]:
    """Every run record in the run-cache directory `runs` (runs/<key[:2]>/<key>/<value>), as dvc.lock entries."""
    for path in sorted(runs.glob("*/*/*")):
        try:
            record = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):  # half-written by a DVC still running, or damaged: DVC skips it too
            continue
        if isinstance(record, dict):
            yield record


def uncached_outputs(dvc_yaml: Path, runs: Path) -> list[dict[str, Any]]:
    """The `outs` entries (path, hash, md5, ...) of the recorded runs' `cache: false` outputs, one per object."""
    uncached = uncached_paths(dvc_yaml)
    found: dict[str, dict[str, Any]] = {}
    for record in run_records(runs):
        for out in record.get("outs") or []:
            if isinstance(out, dict) and out.get("path") in uncached and out.get("md5"):
                found.setdefault(str(out["md5"]), out)
    return [found[md5] for md5 in sorted(found)]


def dvc_file(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A .dvc file that tracks `outputs` under their md5s as paths: unique, and no other output's path."""
    return {"outs": [{**out, "path": str(out["md5"])} for out in outputs]}


def push(remote: str | None = None) -> int:
    """`dvc push --run-cache`, then the runs' `cache: false` outputs; how many files were sent in all."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        root = Path(repo.root_dir)
        # DVC's cache directory: `cache.dir` in any config file (DVC reads it as an absolute path), or .dvc/cache
        runs = Path(repo.config["cache"].get("dir") or root / ".dvc" / "cache") / "runs"
        sent = int(repo.push(remote=remote, run_cache=True))
    outputs = uncached_outputs(root / "dvc.yaml", runs)
    if not outputs:
        return sent
    # In the workspace (DVC takes targets from there, and never from .dvc/), gone when the push ends or fails
    with tempfile.TemporaryDirectory(prefix=".fmnist-run-outputs-", dir=root) as folder:
        target = Path(folder) / "outputs.dvc"
        target.write_text(yaml.safe_dump(dvc_file(outputs), sort_keys=False))
        with Repo(".") as repo:  # a new index, which includes the .dvc file
            sent += int(repo.push(targets=[str(target)], remote=remote))
    return sent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`fmnist remote check [--set-default OPTION=VALUE ...] [REMOTE]` and `fmnist remote push [REMOTE]`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    push_parser = actions.add_parser("push", help="dvc push --run-cache, so that other machines restore these runs")
    push_parser.add_argument("remote", nargs="?", help="the remote's name (default: the default remote)")
    check_parser = actions.add_parser("check", help="check that a DVC remote answers and takes its credentials")
    check_parser.add_argument("remote", nargs="?", help="the remote's name (default: the default remote)")
    check_parser.add_argument(
        "--set-default",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="write the remote's OPTION to .dvc/config.local unless a config file sets it",
    )


def run(args: argparse.Namespace) -> int:
    """Push, or check the remote within DEADLINE seconds; print what was found (exit 0), or raise the Problem."""
    if args.action == "push":
        print(f"remote push: {push(args.remote)} files sent, run records and their outputs")
        return 0
    defaults = dict(pair.split("=", 1) for pair in args.set_default)
    logging.getLogger("dvc").setLevel(logging.CRITICAL)  # the one line below is the whole story
    try:
        with at_most(DEADLINE):
            print(check(args.remote, defaults))
    except TimeoutError as exc:
        raise Problem(f"DVC remote {args.remote or '(default)'}: {exc}; check the network") from None
    return 0
