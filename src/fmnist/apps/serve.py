"""`fmnist serve`: a page to try the model in a browser, and `POST /predict` (JSON) for programs.

    fmnist serve [--host 127.0.0.1] [--port 8000] [--model FILE | --model-stage prod | --model-version v1.0.0]
                 [--model-repo REPO] [--tta none|flip|flip_shift] [--workers 1] [--max-batch 32]
                 [--batch-wait-ms 2] [--max-queue 64] [--deadline-s 10]

`POST /predict` takes one image as the request body (or as the multipart field `image`) and answers with every
class's probability, whether the model is unsure (it does not look like a garment the model knows; null fields
for a model without calibration), the 28x28 image the model saw (a PNG data URL) and the model's provenance.
Unsure is an answer (200). Bad requests get a 4xx with `{"error": "..."}`; the server keeps serving. It listens on
127.0.0.1 unless told otherwise.

The event loop only moves bytes: images are decoded in a thread pool, and the model runs in its own thread on
batches of concurrent requests (fmnist.apps.batcher). At most `--max-queue` requests are in progress; one more
gets 503 with `Retry-After` instead of more memory. A request still unanswered after `--deadline-s` (a body that
stops arriving, or a server that cannot keep up) gets 504 and its connection is closed, as is a connection whose
headers take as long. `GET /healthz` answers without the model.

One process serves at most about one core's worth of requests (Python holds one lock while it parses HTTP and
prepares images), so the server runs `--workers` processes under gunicorn (aiohttp.GunicornWebWorker), each
loading its own copy of the model after the fork, all taking connections from the one socket that this process
opened. gunicorn replaces a worker that dies; SIGTERM or Ctrl-C lets the workers finish the requests they hold,
then ends them and exits 0; a worker whose gunicorn master dies stops by itself.
"""

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import io
import logging
import math
import multiprocessing
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from aiohttp import BodyPartReader, web
from gunicorn.app.base import BaseApplication
from PIL import Image

from fmnist.apps.batcher import MicroBatcher, Overloaded
from fmnist.apps.model_choice import ChosenModel, Prediction, add_model_arguments, chosen_model, load_predictor
from fmnist.lib import files, runs
from fmnist.lib.answers import Answers
from fmnist.lib.calibration import Calibration
from fmnist.lib.files import IMAGE_SHAPE, NUM_CLASSES
from fmnist.lib.photo import UnusableImage, decode
from fmnist.lib.process import PipelineError

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; anything larger is refused with 413
DECODE_THREADS = min(4, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes and resizes
RETRY_AFTER_S = 1  # what a 503 tells a client to wait: a full queue drains in well under a second
BACKLOG = 128  # connections the kernel queues for the workers to accept
# gunicorn's `timeout`: a worker silent for this long is killed and replaced. Its first heartbeat comes once it has
# imported TensorFlow and loaded the model, seconds that a busy machine stretches many times over; after that its
# event loop beats every second, so this only bounds a worker that hangs.
BOOT_TIMEOUT_S = 120
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


class Predict(Protocol):
    """What answers the images: a fmnist.nn.inference.Predictor (tests put a fake in its place)."""

    calibration: Calibration | None  # None: the Answers have no unsure score or verdict

    def __call__(self, images: np.ndarray) -> Answers:
        """uint8 images (N, 28, 28, 1) -> their Answers."""
        ...


# What the batcher hands each request: its image's row of the batch's Answers, as one record. Where the model is
# uncalibrated the score is NaN and unsure False, and the answer says null for both (Predict.calibration is None).
ANSWER_ROW = np.dtype([("probabilities", np.float32, (NUM_CLASSES,)), ("unsure_score", np.float32), ("unsure", bool)])
PREDICT: web.AppKey[Predict] = web.AppKey("predict")
PROVENANCE = web.AppKey("provenance", dict)
LIMITS = web.AppKey("limits", Limits)
ADMITTED = web.AppKey("admitted", InProgress)  # from the headers to the model's answer, at most --max-queue
DECODING = web.AppKey("decoding", InProgress)  # in the decode threads: soon to join a batch
BATCHER = web.AppKey("batcher", MicroBatcher)
DECODER = web.AppKey("decoder", ThreadPoolExecutor)


def provenance(choice: ChosenModel, lock_file: Path = files.DVC_LOCK_FILE) -> dict[str, Any]:
    """Which model answers: its file and MD5, how it predicts, its calibration (null: it cannot answer unsure), the
    git commit it came from and, for the workspace's own model file, the MD5 that dvc.lock records for it."""
    md5 = hashlib.md5(choice.path.read_bytes()).hexdigest()
    found = {
        "file": str(choice.path),
        "md5": md5,
        "inference": dataclasses.asdict(choice.inference),
        "calibration": calibration_summary(choice.calibration),
    }
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


def calibration_summary(calibration: Calibration | None) -> dict[str, float] | None:
    """What a client needs to know of the calibration: the unsure threshold, the share of validation images it
    answers sure (coverage) and the temperature of the probabilities; None without one."""
    if calibration is None:
        return None
    return {
        "unsure_threshold": calibration.threshold,
        "coverage": calibration.coverage,
        "temperature": calibration.temperature,
    }


def answer_rows(predict: Predict, images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28, 1) -> (N,) ANSWER_ROW records: the batcher's function, one row per image."""
    found = predict(images)
    rows = np.zeros(len(images), ANSWER_ROW)
    rows["probabilities"] = found.probabilities
    rows["unsure_score"] = np.nan if found.unsure_score is None else found.unsure_score
    rows["unsure"] = False if found.unsure is None else found.unsure
    return rows


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
        row = await request.app[BATCHER].predict(image[..., None])  # (28, 28, 1) -> one ANSWER_ROW record
    calibration = request.app[PREDICT].calibration
    if calibration is None:
        verdict: tuple[bool | None, float | None, float | None] = (None, None, None)
    else:
        verdict = (bool(row["unsure"]), float(row["unsure_score"]), calibration.threshold)
    prediction = Prediction("upload", image, row["probabilities"], *verdict)
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
    except UnusableImage as exc:  # the status comes from the kind of problem (fmnist.lib.photo)
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
        functools.partial(answer_rows, app[PREDICT]),
        limits.max_batch,
        limits.batch_wait_ms / 1000,
        limits.max_queue,
        coming=lambda: decoding.count,
    )
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode") as decoder:
        async with batcher:
            app[BATCHER], app[DECODER] = batcher, decoder
            yield


def create_app(predict: Predict, model_provenance: dict[str, Any], limits: Limits = Limits()) -> web.Application:
    """The web application around a model's predictor (uint8 images (N, 28, 28, 1) -> their Answers)."""
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
    parser.add_argument(
        "--workers",
        type=positive(int),
        default=1,
        help="server processes, each with its own copy of the model (about 0.6 GB each); one per core serves the "
        "most requests (default: %(default)s)",
    )
    limits = (  # (option, its type, what it bounds); each default is Limits()'s, the field of the option's name
        ("--max-batch", positive(int), "images per model call"),
        ("--batch-wait-ms", non_negative, "how long an image may wait for those being decoded, to share a model call"),
        ("--max-queue", positive(int), "requests in progress at most; one more gets 503 with Retry-After"),
        (
            "--deadline-s",
            positive(float),
            "a request unanswered after this many seconds gets 504; a connection idle or with its headers "
            "incomplete for as long is closed",
        ),
    )
    for option, kind, what in limits:
        default = getattr(Limits(), option.removeprefix("--").replace("-", "_"))
        parser.add_argument(option, type=kind, default=default, help=f"{what} (default: %(default)s)")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port; a PipelineError naming the fix if it cannot be opened."""
    try:
        return socket.create_server((host, port), backlog=BACKLOG)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PipelineError(
            f"cannot listen on {host}:{port} ({reason}); stop what uses that port or pass --port"
        ) from exc


@dataclass(frozen=True)
class Served:
    """What each worker process serves: the model (its file, how it predicts, its calibration), its provenance and
    the limits."""

    model: ChosenModel
    provenance: dict[str, Any]
    limits: Limits
    workers: int  # worker processes on this machine: they share its cores


def loaded_predictor(model: ChosenModel, threads: int) -> Predict:
    """The model's predictor on at most `threads` TensorFlow threads, its graph traced. Imports TensorFlow: only
    in a process that forks no workers (TensorFlow does not survive a fork once loaded: benoitc/gunicorn#2369)."""
    predict = load_predictor(model, threads)
    predict(np.zeros((1, *IMAGE_SHAPE), np.uint8))  # trace the graph now, not during the first request
    return predict


def _loads(model: ChosenModel) -> None:
    """Load and trace the model, then drop it (what check_model's child process does)."""
    loaded_predictor(model, threads=1)


def check_model(model: ChosenModel) -> None:
    """Load and trace the model once in a child process, so that a bad model is one error line (its PipelineError,
    raised here) before any worker starts, while TensorFlow stays out of this process, which forks the workers.
    The child also gives the warning of a model without calibration, once for all workers."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        child.submit(_loads, model).result()


async def worker_app(served: Served) -> web.Application:
    """The application of one worker process, built after gunicorn forked it: its own model and TensorFlow, on its
    share of the cores (N workers that each used every core would slow each other down)."""
    from fmnist.lib.process import usable_cores

    threads = max(1, usable_cores() // served.workers)
    predict = loaded_predictor(served.model, threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # this module's log lines, on stderr
    return create_app(predict, served.provenance, served.limits)


class GunicornServer(BaseApplication):
    """`fmnist serve`'s worker processes under gunicorn's arbiter, which replaces a worker that exits, and on SIGTERM
    stops taking connections, lets the workers finish the requests they hold, and exits 0."""

    def __init__(self, served: Served, listening_fd: int) -> None:
        self.served, self.listening_fd = served, listening_fd  # gunicorn takes the descriptor over and closes it
        super().__init__()

    def load_config(self) -> None:
        """gunicorn's settings, from `fmnist serve`'s."""
        deadline_s = self.served.limits.deadline_s
        settings = {
            "bind": [f"fd://{self.listening_fd}"],  # the socket `run` opened: a port in use is one error line
            "workers": self.served.workers,
            "worker_class": "aiohttp.GunicornWebWorker",
            "timeout": BOOT_TIMEOUT_S,
            # After SIGTERM the master waits this long before it kills the workers. A worker notices the signal
            # within a second, then gives the requests it holds 95% of this to finish (aiohttp's shutdown_timeout):
            # more than the deadline, after which every request has its answer.
            "graceful_timeout": math.ceil(deadline_s / 0.95) + 2,
            # aiohttp's keepalive_timeout (whole seconds here): a connection idle, or still sending its headers
            # (before any handler, so before the deadline middleware), is closed after the deadline too.
            "keepalive": max(1, math.ceil(deadline_s)),
            "accesslog": "-",  # a line per request on stdout: how the server is watched
            "control_socket_disable": True,  # one socket path per user, which a second server would contend for
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self) -> Callable[[], Awaitable[web.Application]]:
        """What each worker calls, after the fork, for its application."""
        return functools.partial(worker_app, self.served)


def run(args: argparse.Namespace) -> int:
    """Open the port, check the model, then serve with `--workers` processes until stopped (exit status 0)."""
    limits = Limits(args.max_batch, args.batch_wait_ms, args.max_queue, args.deadline_s)
    choice = chosen_model(args)
    listener = listening_socket(args.host, args.port)
    check_model(choice)  # its child warns if the model cannot answer unsure: the workers need not say it again
    served = Served(dataclasses.replace(choice, uncalibrated=None), provenance(choice), limits, args.workers)
    port = listener.getsockname()[1]  # the one chosen, for --port 0
    workers = "1 worker process" if args.workers == 1 else f"{args.workers} worker processes"
    print(f"serving {choice.path} on http://{args.host}:{port}/ in {workers} (Ctrl-C stops)", flush=True)
    GunicornServer(served, listener.detach()).run()  # gunicorn's arbiter ends the process: 0 after SIGTERM, Ctrl-C
    return 0
