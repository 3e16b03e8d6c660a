"""`fmnist serve`: a page to try the model in a browser, and `POST /predict` (JSON) for programs.

    fmnist serve [--host 127.0.0.1] [--port 8000] [--model FILE | --model-stage prod | --model-version v1.0.0]
                 [--tta none|flip|flip_shift] [--workers 1] [--max-batch 32] [--batch-wait-ms 2] [--max-queue 64]
                 [--deadline-s 10]

`POST /predict` takes one image as the request body (or as the multipart field `image`) and answers with every
class's probability, the 28x28 image the model saw (a PNG data URL) and the model's provenance. Bad requests get
a 4xx with `{"error": "..."}`; the server keeps serving. It listens on 127.0.0.1 unless told otherwise.

The event loop only moves bytes: images are decoded in a thread pool, and the model runs in its own thread on
batches of concurrent requests (fmnist.apps.batcher). At most `--max-queue` requests are in progress; one more
gets 503 with `Retry-After` instead of more memory. A request still unanswered after `--deadline-s` (a body that
stops arriving, or a server that cannot keep up) gets 504 and its connection is closed, as is a connection whose
headers take as long. `GET /healthz` answers without the model.

One process serves at most about one core's worth of requests (Python holds one lock while it parses HTTP and
prepares images). `--workers N` starts N server processes instead, each with its own copy of the model, taking
connections from one socket that this process opened; it stops them when it is stopped, and each stops by
itself if this process dies.
"""

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from aiohttp import BodyPartReader, web
from PIL import Image

from fmnist.apps.batcher import MicroBatcher, Overloaded
from fmnist.apps.photo import UnusableImage, decode
from fmnist.apps.predict import ChosenModel, Prediction, add_model_arguments, chosen_model
from fmnist.lib import files, runs
from fmnist.lib.dataset import IMAGE_SHAPE
from fmnist.lib.errors import PipelineError
from fmnist.lib.params import InferenceParams

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; anything larger is refused with 413
DECODE_THREADS = min(4, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes and resizes
RETRY_AFTER_S = 1  # what a 503 tells a client to wait: a full queue drains in well under a second
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("fmnist.apps.serve")


@dataclass(frozen=True)
class Limits:
    """How `fmnist serve` batches requests and sheds load (its command-line settings)."""

    max_batch: int = 32  # images per model call
    batch_wait_ms: float = 2.0  # how long a request may wait for those being decoded, to share a model call
    max_queue: int = 64  # requests in progress (each may hold a 10 MB body); one more gets 503
    # A request unanswered after this gets 504 and its connection closed; so is, without an answer, a connection
    # idle or still sending its headers for as long.
    deadline_s: float = 10.0


class InProgress:
    """How many requests are in some stage now; one more beyond `limit` (if any) is refused with `Overloaded`."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.count = limit, 0

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Count the request in while the block runs; `Overloaded` if `limit` are in already."""
        if self.limit is not None and self.count >= self.limit:
            raise Overloaded(f"the server is busy ({self.limit} requests in progress); try again shortly")
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images (N, 28, 28, 1) -> float32 probabilities (N, 10)
PREDICT: web.AppKey[Predict] = web.AppKey("predict")
PROVENANCE = web.AppKey("provenance", dict)
LIMITS = web.AppKey("limits", Limits)
ADMITTED = web.AppKey("admitted", InProgress)  # from the headers to the model's answer, at most --max-queue
DECODING = web.AppKey("decoding", InProgress)  # in the decode threads: soon to join a batch
BATCHER = web.AppKey("batcher", MicroBatcher)
DECODER = web.AppKey("decoder", ThreadPoolExecutor)


def provenance(choice: ChosenModel, lock_file: Path = files.DVC_LOCK_FILE) -> dict[str, Any]:
    """Which model answers: its file and MD5, the git commit it came from and, for the workspace's own model file,
    the MD5 that dvc.lock records for it."""
    md5 = hashlib.md5(choice.path.read_bytes()).hexdigest()
    found = {"file": str(choice.path), "md5": md5, "inference": dataclasses.asdict(choice.inference)}
    if choice.commit is not None:  # a registered model: its commit is the registry's, not this directory's
        return {**found, "git_commit": choice.commit, "source": "registry"}
    locked = None
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else None
    if isinstance(lock, dict):
        outs = lock.get("stages", {}).get("train", {}).get("outs", [])
        model = choice.path.resolve()
        root = lock_file.resolve().parent
        locked = next((o.get("md5") for o in outs if (root / o.get("path", "")).resolve() == model), None)
    return {
        **found,
        "git_commit": runs.workspace_commit(),
        "source": "file",
        "dvc_lock_md5": locked,
        "matches_dvc_lock": md5 == locked,
    }


def png_data_url(image: np.ndarray) -> str:
    """(28, 28) uint8 -> "data:image/png;base64,..."."""
    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def decoded(data: bytes) -> tuple[np.ndarray, str]:
    """Encoded image -> ((28, 28) uint8 network input, its PNG data URL); runs in the decode threads."""
    image = decode(data)
    return image, png_data_url(image)


def answer(prediction: Prediction, input_image: str, model_provenance: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a successful `POST /predict` (`input_image`: the PNG data URL of the image seen)."""
    return {**prediction.summary(), "input_image": input_image, "model": model_provenance}


async def request_image(request: web.Request) -> bytes:
    """The image bytes of a request: the multipart field `image` (or its first file), else the raw body."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and (part.name == "image" or part.filename):
                return await part.read(decode=True)
        raise web.HTTPBadRequest(reason="the multipart request has no field named image")
    return await request.read()


async def predict_handler(request: web.Request) -> web.Response:
    """POST /predict: read the body, decode it in a thread, predict it in a batch with other requests."""
    with request.app[ADMITTED].entered():
        data = await request_image(request)
        if not data:
            raise web.HTTPBadRequest(reason="empty request: send an image as the body or as the multipart field image")
        with request.app[DECODING].entered():
            # If the deadline gives up on the request first, a decode still queued is dropped with it (asyncio
            # cancels the pool's future); one already running ends in its thread: at most one per thread.
            loop = asyncio.get_running_loop()
            image, input_image = await loop.run_in_executor(request.app[DECODER], decoded, data)
        probabilities = await request.app[BATCHER].predict(image[..., None])  # (28, 28, 1) -> (10,)
    prediction = Prediction("upload", image, probabilities)
    return web.json_response(answer(prediction, input_image, request.app[PROVENANCE]))


async def health_handler(request: web.Request) -> web.Response:
    """GET /healthz: the server is up; how busy it is. Never touches the model."""
    app = request.app
    busy = {"in_progress": app[ADMITTED].count, "decoding": app[DECODING].count, "queued": app[BATCHER].queued}
    return web.json_response({"status": "ok", "pid": os.getpid(), **busy})  # pid: which worker process answered


async def page_handler(request: web.Request) -> web.Response:
    """GET /: the page."""
    return web.Response(
        text=resources.files("fmnist.apps").joinpath("static/index.html").read_text(), content_type="text/html"
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as `{"error": "..."}` with the status its type implies; an unexpected one as a 500 without a
    traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPRequestEntityTooLarge):  # aiohttp's own, for a body above client_max_size
            reason = f"the request is larger than the {MAX_BODY_BYTES // 2**20} MB limit; send a smaller image"
        else:
            reason = exc.reason
        return web.json_response({"error": reason}, status=exc.status)
    except UnusableImage as exc:  # the status comes from the kind of problem (fmnist.apps.photo)
        return web.json_response({"error": str(exc)}, status=exc.http_status)
    except Overloaded as exc:
        return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    except ConnectionError:  # the client went away mid-upload: an answer for the log, nobody will read it
        log.info("client disconnected during %s %s", request.method, request.path)
        return web.json_response({"error": "the client disconnected before sending the whole request"}, status=400)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error; the server log has the details"}, status=500)


@web.middleware
async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request unanswered after `Limits.deadline_s` gets 504, and its connection is closed (not kept alive to
    read the rest of a body that may never come)."""
    seconds = request.app[LIMITS].deadline_s
    try:
        return await asyncio.wait_for(handler(request), seconds)
    except asyncio.TimeoutError:
        pass
    error = f"no answer within the {seconds:g} s deadline (the body arrived too slowly, or the server is busy)"
    response = web.json_response({"error": error}, status=504)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # closes once the answer is flushed, without reading the body's rest
    return response


async def workers(app: web.Application) -> AsyncIterator[None]:
    """The decode threads and the model's batcher, for as long as the application runs."""
    limits = app[LIMITS]
    decoding = app[DECODING]
    batcher = MicroBatcher(
        app[PREDICT], limits.max_batch, limits.batch_wait_ms / 1000, limits.max_queue, coming=lambda: decoding.count
    )
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode") as decoder:
        async with batcher:
            app[BATCHER], app[DECODER] = batcher, decoder
            yield


def create_app(predict: Predict, model_provenance: dict[str, Any], limits: Limits = Limits()) -> web.Application:
    """The web application around a model's predictor (uint8 images (N, 28, 28, 1) -> probabilities (N, 10))."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors, deadline])
    app[PREDICT], app[PROVENANCE], app[LIMITS] = predict, model_provenance, limits
    app[ADMITTED], app[DECODING] = InProgress(limits.max_queue), InProgress()
    app.cleanup_ctx.append(workers)
    app.router.add_get("/", page_handler)
    app.router.add_get("/healthz", health_handler)
    app.router.add_post("/predict", predict_handler)
    return app


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: the text as `kind` (int or float), refused unless it is above 0."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def non_negative(text: str) -> float:
    """An argparse type: the text as a float, refused if it is below 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of `fmnist serve`."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    add_model_arguments(parser)
    default = Limits()
    parser.add_argument(
        "--workers",
        type=positive(int),
        default=1,
        help="server processes, each with its own copy of the model (about 0.6 GB each); one per core serves the "
        "most requests (default: %(default)s)",
    )
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # set by --workers for its processes
    parser.add_argument(
        "--max-batch",
        type=positive(int),
        default=default.max_batch,
        help="images per model call (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=non_negative,
        default=default.batch_wait_ms,
        help="how long an image may wait for those being decoded, to share a model call (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=positive(int),
        default=default.max_queue,
        help="requests in progress at most; one more gets 503 with Retry-After (default: %(default)s)",
    )
    parser.add_argument(
        "--deadline-s",
        type=positive(float),
        default=default.deadline_s,
        help="a request unanswered after this many seconds gets 504; a connection idle or with its headers "
        "incomplete for as long is closed (default: %(default)s)",
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port; a PipelineError naming the fix if it cannot be opened."""
    try:
        return socket.create_server((host, port), backlog=128)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PipelineError(
            f"cannot listen on {host}:{port} ({reason}); stop what uses that port or pass --port"
        ) from exc


def serve_forever(listener: socket.socket, spec: dict[str, Any], announce: str | None = None) -> None:
    """Load the model, print `announce` if given, then answer requests on `listener` until interrupted (`spec`:
    what `run` decided, as JSON)."""
    from fmnist.nn.inference import Predictor
    from fmnist.nn.model import load_model

    limits = Limits(**spec["limits"])
    predict = Predictor(load_model(Path(spec["model"])), InferenceParams(**spec["inference"]))
    predict(np.zeros((1, *IMAGE_SHAPE), np.uint8))  # trace the graph now, not during the first request
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if announce:
        print(announce, flush=True)
    app = create_app(predict, spec["provenance"], limits)
    # keepalive_timeout: a connection idle, or still sending its headers (before any handler, so before the
    # deadline middleware), is closed after the deadline too, not after aiohttp's 75 s.
    web.run_app(app, sock=listener, print=None, keepalive_timeout=limits.deadline_s)


class _Stopped(Exception):
    """SIGINT or SIGTERM reached the process that supervises the workers."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def supervise(listener: socket.socket, spec: dict[str, Any], count: int, announce: str) -> int:
    """Run `count` worker processes on `listener` until this process is stopped (0) or a worker exits (1).

    Each worker gets `spec` as one JSON line on its stdin, which then stays open: its end tells the worker that
    this process is gone, however it died.
    """
    fd = listener.fileno()
    command = [sys.executable, "-m", "fmnist.cli", "serve", "--worker-fd", str(fd)]
    workers: list[subprocess.Popen[bytes]] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    try:
        for _ in range(count):
            worker = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(fd,))
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(spec).encode() + b"\n")
            worker.stdin.flush()
            workers.append(worker)
        print(announce, flush=True)
        while all(worker.poll() is None for worker in workers):
            time.sleep(0.5)
        ended = next(worker for worker in workers if worker.poll() is not None)
        raise PipelineError(f"a worker process exited with status {ended.returncode} (its error is above); stopping")
    except _Stopped:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def exit_with_supervisor() -> None:
    """In a worker: wait for the end of stdin (the supervisor is gone), then stop as on SIGTERM."""
    while os.read(sys.stdin.fileno(), 4096):  # the raw descriptor: Python's buffered stdin must stay free for exit
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(fd: int) -> int:
    """One worker process of `--workers N`: the settings from stdin, the socket inherited as `fd`."""
    spec = json.loads(sys.stdin.buffer.readline())
    threading.Thread(target=exit_with_supervisor, daemon=True).start()
    serve_forever(socket.socket(fileno=fd), spec)
    return 0


def run(args: argparse.Namespace) -> int:
    """Load the model once per process, then serve until interrupted."""
    if args.worker_fd is not None:
        return run_worker(args.worker_fd)
    limits = Limits(args.max_batch, args.batch_wait_ms, args.max_queue, args.deadline_s)
    choice = chosen_model(args)
    listener = listening_socket(args.host, args.port)
    port = listener.getsockname()[1]  # the one chosen, for --port 0
    workers = f" in {args.workers} worker processes" if args.workers > 1 else ""
    spec = {
        "model": str(choice.path),
        "inference": dataclasses.asdict(choice.inference),
        "provenance": provenance(choice),
        "limits": dataclasses.asdict(limits),
    }
    announce = f"serving {choice.path} on http://{args.host}:{port}/{workers} (Ctrl-C stops)"
    if args.workers > 1:
        return supervise(listener, spec, args.workers, announce)
    serve_forever(listener, spec, announce)
    return 0
