"""`fmnist serve`: a page to try the model in a browser, and `POST /predict` (JSON) for programs.

    fmnist serve [--host 127.0.0.1] [--port 8000] [--model FILE | --model-stage prod | --model-version v1.0.0]
                 [--tta none|flip]

`POST /predict` takes one image as the request body (or as the multipart field `image`) and answers with every
class's probability, the 28x28 image the model saw (a PNG data URL) and the model's provenance. Bad requests get
a 4xx with `{"error": "..."}`; the server keeps serving. It listens on 127.0.0.1 unless told otherwise.
"""

import argparse
import base64
import dataclasses
import hashlib
import io
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from aiohttp import web
from PIL import Image

from fmnist.apps.photo import UnusableImage, decode
from fmnist.apps.predict import ChosenModel, Prediction, add_model_arguments, chosen_model
from fmnist.lib import paths, runs

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; anything larger is refused with 413
PREDICT = web.AppKey("predict", object)  # a fmnist.nn.inference.Predictor
PROVENANCE = web.AppKey("provenance", dict)
log = logging.getLogger("fmnist.apps.serve")


def provenance(choice: ChosenModel, lock_file: Path = paths.DVC_LOCK_FILE) -> dict[str, Any]:
    """Which model answers: its file and MD5, the git commit it came from and, for the workspace's own model file,
    the MD5 that dvc.lock records for it."""
    md5 = hashlib.md5(choice.path.read_bytes()).hexdigest()
    found = {"file": str(choice.path), "md5": md5, "inference": dataclasses.asdict(choice.inference)}
    if choice.commit is not None:  # a registered model: its commit is the registry's, not this directory's
        return {**found, "git_commit": choice.commit, "source": "registry"}
    locked = None
    if lock_file.is_file():
        outs = yaml.safe_load(lock_file.read_text()).get("stages", {}).get("train", {}).get("outs", [])
        locked = next((o.get("md5") for o in outs if o.get("path") == choice.path.as_posix()), None)
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


def answer(prediction: Prediction, model_provenance: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a successful `POST /predict`."""
    return {**prediction.summary(), "input_image": png_data_url(prediction.image), "model": model_provenance}


async def request_image(request: web.Request) -> bytes:
    """The image bytes of a request: the multipart field `image` (or its first file), else the raw body."""
    if request.content_type.startswith("multipart/"):
        async for part in await request.multipart():
            if part.name == "image" or part.filename:
                return await part.read(decode=True)
        raise web.HTTPBadRequest(reason="the multipart request has no field named image")
    return await request.read()


async def predict_handler(request: web.Request) -> web.Response:
    """POST /predict."""
    data = await request_image(request)
    if not data:
        raise web.HTTPBadRequest(reason="empty request: send an image as the body or as the multipart field image")
    try:
        image = decode(data)
    except UnusableImage as exc:  # the status comes from the kind of problem (fmnist.apps.photo)
        return web.json_response({"error": str(exc)}, status=exc.http_status)
    probabilities = request.app[PREDICT](image[None, ..., None])[0]
    return web.json_response(answer(Prediction("upload", image, probabilities), request.app[PROVENANCE]))


async def page_handler(request: web.Request) -> web.Response:
    """GET /: the page."""
    return web.Response(
        text=resources.files("fmnist.apps").joinpath("static/index.html").read_text(), content_type="text/html"
    )


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error as `{"error": "..."}` with its 4xx status; an unexpected one as a 500 without a traceback."""
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
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error; the server log has the details"}, status=500)


def create_app(predict: Callable[[np.ndarray], np.ndarray], model_provenance: dict[str, Any]) -> web.Application:
    """The web application around a model's predictor (uint8 images (N, 28, 28, 1) -> probabilities (N, 10))."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app[PREDICT], app[PROVENANCE] = predict, model_provenance
    app.router.add_get("/", page_handler)
    app.router.add_post("/predict", predict_handler)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of `fmnist serve`."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load the model once, then serve until interrupted."""
    choice = chosen_model(args)
    from fmnist.nn.inference import Predictor
    from fmnist.nn.modelio import load_model

    predict = Predictor(load_model(choice.path), choice.inference)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"serving {choice.path} on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    web.run_app(create_app(predict, provenance(choice)), host=args.host, port=args.port, print=None)
    return 0
