"""`fmnist serve`: a page to try the model in a browser, and `POST /predict` (JSON) for programs.

    fmnist serve [--host 127.0.0.1] [--port 8000] [--model FILE | --model-stage prod | --model-version v1.0.0]

`POST /predict` takes one image as the request body (or as the multipart field `image`) and answers with every
class's probability, the 28x28 image the model saw (a PNG data URL) and the model's provenance. Bad requests get
a 4xx with `{"error": "..."}`; the server keeps serving. It listens on 127.0.0.1 unless told otherwise.
"""

import argparse
import base64
import hashlib
import io
import logging
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from aiohttp import web
from PIL import Image

from fmnist.apps.predict import Prediction, add_model_arguments, convert, model_file, predict_images

MAX_BODY_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; anything larger is refused with 413
MODEL = web.AppKey("model", object)
PROVENANCE = web.AppKey("provenance", dict)
log = logging.getLogger("fmnist.apps.serve")


def provenance(model_path: Path, lock_file: Path = Path("dvc.lock")) -> dict:
    """Which model answers: its file and MD5, the MD5 that dvc.lock records for it, and the git commit."""
    md5 = hashlib.md5(model_path.read_bytes()).hexdigest()
    locked = None
    if lock_file.is_file():
        outs = yaml.safe_load(lock_file.read_text()).get("stages", {}).get("train", {}).get("outs", [])
        locked = next((o.get("md5") for o in outs if o.get("path") == str(model_path)), None)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    return {
        "file": str(model_path),
        "md5": md5,
        "dvc_lock_md5": locked,
        "matches_dvc_lock": md5 == locked,
        "git_commit": commit,
    }


def png_data_url(image: np.ndarray) -> str:
    """(28, 28) uint8 -> "data:image/png;base64,..."."""
    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def answer(prediction: Prediction, model_provenance: dict) -> dict:
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
        image = convert(data)
    except ValueError as exc:
        status = web.HTTPUnprocessableEntity if "no garment" in str(exc) else web.HTTPUnsupportedMediaType
        raise status(reason=str(exc)) from None
    probabilities = predict_images(request.app[MODEL], image[None])[0]
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
        too_large = f"the request is larger than the {MAX_BODY_BYTES // 2**20} MB limit; send a smaller image"
        return web.json_response({"error": too_large if exc.status == 413 else exc.reason}, status=exc.status)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error; the server log has the details"}, status=500)


def create_app(model, model_provenance: dict) -> web.Application:
    """The web application around a loaded model."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app[MODEL], app[PROVENANCE] = model, model_provenance
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
    from fmnist.nn.modelio import load_model

    path = model_file(args)
    model = load_model(path)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"serving {path} on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    web.run_app(create_app(model, provenance(path)), host=args.host, port=args.port, print=None)
    return 0
