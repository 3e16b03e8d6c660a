"""`fmnist serve`: the JSON API (good and bad requests) and the page, in a real server on 127.0.0.1."""

import base64
import io
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import pytest
from PIL import Image

from fmnist.lib.dataset import CLASS_NAMES
from fmnist.nn.model import build_model
from fmnist.nn.modelio import save_model
from fmnist.tools.predict_bench import photo_like_jpeg
from tests.helpers import TINY_MODEL, VENV_BIN

CHROMIUM = Path(os.environ.get("FMNIST_CHROMIUM", "/usr/bin/chromium"))  # Debian's; `make test` installs it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`fmnist serve` with a tiny model on a free port; yields its base URL."""
    workdir = tmp_path_factory.mktemp("serve")
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), workdir / "model.keras")
    port = free_port()
    process = subprocess.Popen(
        [str(VENV_BIN / "fmnist"), "serve", "--port", str(port), "--model", "model.keras", "--tta", "flip"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("fmnist serve did not start listening within 60 s")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def post(url: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    """POST `body`; (status, JSON answer), for errors too."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def garment_jpeg(garments) -> bytes:
    return photo_like_jpeg(garments["t10k-images-idx3-ubyte"][0])


def test_predict_answers_every_class_the_image_it_saw_and_the_model_provenance(server, garment_jpeg):
    status, answer = post(f"{server}/predict", garment_jpeg, "image/jpeg")
    assert status == 200
    assert list(answer["probabilities"]) == list(CLASS_NAMES)
    assert answer["class"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert answer["input_image"].startswith("data:image/png;base64,")
    seen = Image.open(io.BytesIO(base64.b64decode(answer["input_image"].split(",", 1)[1])))
    assert seen.size == (28, 28) and seen.mode == "L"
    model = answer["model"]
    assert model["file"] == "model.keras" and len(model["md5"]) == 32
    assert model["dvc_lock_md5"] is None and model["matches_dvc_lock"] is False  # no dvc.lock where it runs


def test_multipart_upload_gives_the_same_answer(server, garment_jpeg):
    boundary = "fmnist-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + garment_jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = post(f"{server}/predict", body, f"multipart/form-data; boundary={boundary}")
    assert status == 200
    assert answer["probabilities"] == post(f"{server}/predict", garment_jpeg)[1]["probabilities"]


@pytest.mark.parametrize(
    "body, status, error",
    [
        (lambda jpeg: b"", 400, "empty request"),
        (lambda jpeg: b"just some text", 415, "not an image"),
        (lambda jpeg: jpeg[: len(jpeg) // 2], 415, "damaged or truncated"),
        (lambda jpeg: b"x" * (10 * 1024 * 1024 + 1), 413, "larger than the 10 MB limit"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_json_error_and_the_server_keeps_serving(
    server, garment_jpeg, body, status, error
):
    got, answer = post(f"{server}/predict", body(garment_jpeg))
    assert got == status and error in answer["error"]
    assert post(f"{server}/predict", garment_jpeg)[0] == 200


def test_an_image_without_a_garment_is_unprocessable(server):
    white = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(white, format="PNG")
    assert post(f"{server}/predict", white.getvalue(), "image/png") == (
        422,
        {"error": "no garment found: the image is one flat colour"},
    )


def test_unknown_paths_and_methods_are_json_errors(server):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server}/nowhere", timeout=10)
    assert caught.value.code == 404 and "error" in json.loads(caught.value.read())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server}/predict", timeout=10)  # GET
    assert caught.value.code == 405


def test_it_listens_on_loopback_only_by_default(server):
    # The fixture starts it without --host. Bound to 127.0.0.1 alone, it does not answer on another address of this
    # machine: 127.0.0.2 on Linux (where a server bound to 0.0.0.0 would answer), none at all elsewhere.
    port = int(server.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_the_models_answer(server, garment_jpeg, tmp_path):
    """Debian's chromium, driven by Playwright: upload a JPEG, read the class the page shows."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (`make test` does), or set FMNIST_CHROMIUM")
    photo = tmp_path / "garment.jpg"
    photo.write_bytes(garment_jpeg)
    expected = post(f"{server}/predict", garment_jpeg)[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(server)
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        assert page.text_content("#predicted-class") == expected["class"]
        assert page.locator(".bar").count() == len(CLASS_NAMES)
        assert page.get_attribute("#seen", "src") == expected["input_image"]
        if os.environ.get("FMNIST_SCREENSHOT"):  # the README's screenshot: FMNIST_SCREENSHOT=docs/serve.png
            page.screenshot(path=os.environ["FMNIST_SCREENSHOT"], full_page=True)
        browser.close()
