"""`fmnist serve`: the JSON API (good and bad requests, concurrent ones, faults, unsure answers) and the page, in a
real server on 127.0.0.1; its worker processes killed under load, stopped mid-request and orphaned; overload and
deadlines with a fake model held mid-prediction, in-process."""

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import psutil
import pytest
import yaml
from aiohttp import web
from PIL import Image

from bench import loadtest
from fmnist.apps import serve
from fmnist.apps.model_choice import ChosenModel
from fmnist.lib.answers import Answers
from fmnist.lib.calibration import load_for
from fmnist.lib.files import CLASS_NAMES, NUM_CLASSES
from fmnist.lib.photo import decode, photo_like_jpeg
from fmnist.lib.process import free_port
from fmnist.nn.inference import InferenceParams, Predictor
from fmnist.nn.model import build_model, load_model, save_model
from fmnist.stages.not_garments import digits
from tests.helpers import TINY_MODEL, VENV_BIN, calibrated_tiny_model
from tests.servers import wait_for

CHROMIUM = Path(os.environ.get("FMNIST_CHROMIUM", "/usr/bin/chromium"))  # Debian's; `make test` installs it
DEADLINE_S = 2  # the test server's --deadline-s: a slow body is cut off after this
HELD_S = 10  # bounds how long a fake model or decoder is held by a test


CLIENTS = 8  # concurrent clients of the test that kills a worker under load


def tiny_model(directory: Path) -> Path:
    """An untrained tiny model saved as `directory`/model.keras; its path."""
    keras.utils.set_random_seed(0)
    save_model(build_model(TINY_MODEL, seed=0), directory / "model.keras")
    return directory / "model.keras"


@contextlib.contextmanager
def serving(workdir: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fmnist serve` of `workdir`/model.keras on a free port, once it answers /healthz: yields (base URL, its
    process), which gets SIGTERM at the end if still running. Its output goes to `workdir`/serve.log, which must
    hold no traceback: faults are answered or logged in one line, never as a crash."""
    port = free_port()
    command = [str(VENV_BIN / "fmnist"), "serve", "--port", str(port), "--model", "model.keras", *options]
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: the access log of many requests would fill a pipe and block the server.
    with (workdir / "serve.log").open("w+b") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=log)
        try:
            loadtest.wait_until_healthy(url, process, log)
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=30)
    assert "Traceback" not in (workdir / "serve.log").read_text()


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory):
    """Where `server` runs: its model (a tiny one without calibration) and its serve.log."""
    workdir = tmp_path_factory.mktemp("serve")
    tiny_model(workdir)
    return workdir


@pytest.fixture(scope="module")
def server(server_dir):
    """`fmnist serve` with a tiny model without calibration on a free port; yields its base URL."""
    with serving(server_dir, "--tta", "flip", "--deadline-s", str(DEADLINE_S)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory, garments):
    """A tiny model trained on synthetic garments, with its calibration (for --tta flip) beside it."""
    return calibrated_tiny_model(tmp_path_factory.mktemp("calibrated"), garments, tta="flip")


@pytest.fixture(scope="module")
def calibrated_server(calibrated_model):
    """`fmnist serve` with a calibrated tiny model on a free port; yields its base URL."""
    with serving(calibrated_model.parent, "--tta", "flip") as (url, _):
        yield url


def png_bytes(image: np.ndarray) -> bytes:
    """A (28, 28) uint8 array as a greyscale PNG."""
    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG")
    return out.getvalue()


BLANK_PNG = png_bytes(np.zeros((28, 28), np.uint8))  # 28x28 on black: the conversion passes it on unchanged
DIGIT_PNG = png_bytes(digits()[3])  # a handwritten 3, light on black as the data set's images


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


def test_a_model_without_calibration_answers_null_unsure_fields_and_its_server_warns_once(
    server, server_dir, garment_jpeg
):
    for body in (garment_jpeg, BLANK_PNG):  # a blank image too gets a garment label: the model cannot say unsure
        status, answer = post(f"{server}/predict", body)
        assert status == 200 and answer["class"] in CLASS_NAMES
        assert (answer["unsure"], answer["unsure_score"], answer["unsure_threshold"]) == (None, None, None)
        assert answer["model"]["calibration"] is None
    warnings = [line for line in (server_dir / "serve.log").read_text().splitlines() if line.startswith("warning:")]
    assert warnings == [  # said by the model check, before the workers start; not again by the worker
        "warning: model.keras has no calibration beside it (calibration.npz): it cannot say unsure, so every image "
        "gets a garment label; copy the calibration.npz that `dvc repro calibrate` fitted for it beside it"
    ]


def test_a_calibrated_model_answers_unsure_for_a_blank_image_and_a_digit_and_sure_for_a_garment_photo(
    calibrated_server, calibrated_model, garment_jpeg
):
    """The answers of the model's own Predictor, with the verdict, the score and the threshold, and the
    calibration in the provenance."""
    calibration = load_for(calibrated_model)
    bodies = [garment_jpeg, BLANK_PNG, DIGIT_PNG]
    images = np.stack([decode(body) for body in bodies])[..., None]
    expected = Predictor(load_model(calibrated_model), InferenceParams("flip", 8), calibration)(images)
    for i, body in enumerate(bodies):
        status, answer = post(f"{calibrated_server}/predict", body)
        assert status == 200  # unsure is an answer
        assert answer["unsure"] is (i > 0) and answer["unsure"] == bool(expected.unsure[i])
        assert answer["unsure_score"] == pytest.approx(float(expected.unsure_score[i]), abs=1e-5)
        assert answer["unsure_threshold"] == calibration.threshold
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected.probabilities[i], atol=1e-5)
        assert answer["class"] == CLASS_NAMES[expected.probabilities[i].argmax()]  # unsure: the best guess
        assert answer["model"]["calibration"] == {
            "unsure_threshold": calibration.threshold,
            "coverage": calibration.coverage,
            "temperature": calibration.temperature,
        }


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
        (lambda jpeg: np.random.default_rng(0).bytes(10 * 1024 * 1024), 415, "not an image"),  # 10 MB of garbage
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


def test_a_port_in_use_is_one_line_naming_the_fix_before_the_model_loads(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [str(VENV_BIN / "fmnist"), "serve", "--port", str(port), "--model", "nothing.keras", "--tta", "none"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    fix = "stop what uses that port or pass --port"
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); {fix}\n"


def test_a_damaged_model_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    port = free_port()
    command = [str(VENV_BIN / "fmnist"), "serve", "--port", str(port), "--model", "model.keras", "--tta", "none"]
    result = subprocess.run([*command, "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == (
        "error: model.keras is damaged: it is not a readable .keras zip (File is not a zip file); "
        "`dvc pull model.keras` restores the pipeline's, `dvc repro train` retrains it\n"
    )


def worker_pids(url: str, count: int, timeout: float = 90, besides: frozenset[int] = frozenset()) -> set[int]:
    """The process ids of `count` workers not in `besides`, each seen answering /healthz (a new connection goes to
    whichever worker accepts it first, so all of them answer before long)."""
    seen: set[int] = set()

    def all_answered() -> bool:
        with contextlib.suppress(OSError):
            seen.add(get_json(f"{url}/healthz")[1]["pid"])
        return len(seen - besides) >= count

    wait_for(all_answered, timeout, f"{count} workers answering /healthz", interval=0.05)
    return seen - besides


def children(pid: int) -> set[int]:
    """The process ids of the children of process `pid` (of gunicorn's master: its workers)."""
    return {child.pid for child in psutil.Process(pid).children()}


def ended(pids: set[int]) -> bool:
    """Whether every process in `pids` has ended (a zombie, exited but not yet reaped, counts as ended)."""
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


@dataclass(frozen=True)
class UnderLoad:
    """A server in two worker processes with clients posting to it: what a test hurts, and what the clients got."""

    url: str
    master: subprocess.Popen  # gunicorn's
    workers: set[int]
    outcomes: Future[list[loadtest.Outcome]]  # once the clients are done


@contextlib.contextmanager
def two_workers_under_load(workdir: Path, garments, seconds: float) -> Iterator[UnderLoad]:
    """`fmnist serve --workers 2` with a tiny model, and 8 clients posting photos to it (10% bad) for `seconds`, from
    2 s before the block."""
    tiny_model(workdir)
    requests = loadtest.payloads(garments["t10k-images-idx3-ubyte"][:50], bad_fraction=0.1)
    with serving(workdir, "--tta", "none", "--workers", "2") as (url, master), ThreadPoolExecutor(1) as clients:
        workers = worker_pids(url, 2)
        outcomes = clients.submit(asyncio.run, loadtest.load(f"{url}/predict", CLIENTS, seconds, requests))
        time.sleep(2)
        yield UnderLoad(url, master, workers, outcomes)


def sent_before(outcomes: list[loadtest.Outcome], moment: float) -> tuple[list[loadtest.Outcome], ...]:
    """(the requests sent before `moment` (time.perf_counter), those sent from then on)."""
    return [o for o in outcomes if o.started < moment], [o for o in outcomes if o.started >= moment]


def as_they_should(outcomes: list[loadtest.Outcome]) -> bool:
    """Whether every good request got 200 and every bad one a 4xx."""
    return all(o.status == 200 if o.good else o.status is not None and 400 <= o.status < 500 for o in outcomes)


@pytest.mark.slow
def test_a_worker_killed_under_load_fails_only_its_own_requests_and_is_replaced(tmp_path, garments):
    """Of the requests sent before the worker died, only those it held get no answer; every one sent after gets its
    answer from the other worker; gunicorn forks a new worker at once, which answers once it has loaded TensorFlow
    and the model."""
    with two_workers_under_load(tmp_path, garments, seconds=10) as server:
        victim = psutil.Process(min(server.workers))
        victim.kill()
        victim.wait(timeout=10)
        died = time.perf_counter()  # its connections are closed from here on
        wait_for(lambda: len(children(server.master.pid)) == 2, 5, "two worker processes again")
        new = worker_pids(server.url, 1, timeout=60, besides=frozenset(server.workers))
        outcomes = server.outcomes.result(timeout=60)
        assert children(server.master.pid) == (server.workers - {victim.pid}) | new and server.master.poll() is None
    before, after = sent_before(outcomes, died)
    unanswered = [o for o in before if o.status is None]
    assert len(unanswered) <= CLIENTS  # at most the one request each client had in flight
    assert as_they_should([o for o in before if o.status is not None])
    assert len(after) > 100 and as_they_should(after)


@pytest.mark.slow
def test_sigterm_under_load_answers_every_request_sent_before_it_then_exits_0(tmp_path, garments):
    """The workers finish what they hold and the server exits 0. A request sent after the signal is answered (the
    workers stop within a second) or finds the server closed, never a 5xx."""
    with two_workers_under_load(tmp_path, garments, seconds=6) as server:
        stopped = time.perf_counter()
        server.master.send_signal(signal.SIGTERM)
        assert server.master.wait(timeout=30) == 0 and ended(server.workers)
        outcomes = server.outcomes.result(timeout=60)
    before, after = sent_before(outcomes, stopped)
    assert any(o.started + o.seconds > stopped for o in before)  # some were in the server's hands at the signal
    assert as_they_should(before)
    assert all(o.status is None or o.status < 500 for o in after) and after[-1].status is None  # closed by then


@pytest.mark.slow
def test_workers_stop_by_themselves_when_their_master_is_killed(tmp_path):
    tiny_model(tmp_path)
    with serving(tmp_path, "--tta", "none", "--workers", "2") as (url, master):
        workers = worker_pids(url, 2)
        master.kill()  # a crash or the OOM killer: nobody tells the workers
        assert master.wait(timeout=10) == -signal.SIGKILL
        wait_for(lambda: ended(workers), 30, "the workers of a killed master ending")


def test_the_batching_and_load_settings_are_command_line_options_checked_on_the_way_in(capsys):
    from fmnist.cli import parser

    options = ["serve", "--max-batch", "8", "--batch-wait-ms", "0", "--max-queue", "4", "--workers", "2"]
    args = parser(["serve"]).parse_args(options)
    assert (args.max_batch, args.batch_wait_ms, args.max_queue, args.deadline_s, args.workers) == (8, 0.0, 4, 10.0, 2)
    for bad in (
        ["--max-batch", "0"],
        ["--batch-wait-ms", "-1"],
        ["--max-queue", "-3"],
        ["--deadline-s", "0"],
        ["--workers", "0"],
    ):
        with pytest.raises(SystemExit):
            parser(["serve"]).parse_args(["serve", *bad])
        assert f"argument {bad[0]}: must be" in capsys.readouterr().err


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
        assert page.is_hidden("#unsure") and page.is_visible("#uncalibrated")  # this model cannot say unsure
        if os.environ.get("FMNIST_SCREENSHOT"):  # docs/models.md's screenshot: FMNIST_SCREENSHOT=docs/serve.png
            page.screenshot(path=os.environ["FMNIST_SCREENSHOT"], full_page=True)
        browser.close()


GREY = "rgb(136, 136, 136)"  # the page's colour for a best guess


@pytest.mark.slow
def test_the_page_says_plainly_when_it_does_not_know_and_greys_out_the_guess(calibrated_server, garment_jpeg, tmp_path):
    """A blank image, then a garment photo, uploaded in Chromium to a server with a calibrated model."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (`make test` does), or set FMNIST_CHROMIUM")
    (tmp_path / "blank.png").write_bytes(BLANK_PNG)
    (tmp_path / "garment.jpg").write_bytes(garment_jpeg)
    guess = post(f"{calibrated_server}/predict", BLANK_PNG)[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(calibrated_server)
        page.set_input_files("#file", str(tmp_path / "blank.png"))
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        assert page.text_content("#unsure") == "This does not look like a garment the model knows."
        assert page.is_visible("#unsure")
        shown = " ".join(page.inner_text("#answer").split())
        assert shown == f"best guess: {guess['class']} {100 * guess['probability']:.1f}%"
        colour = "(element) => getComputedStyle(element).color"
        assert page.eval_on_selector("#answer", colour) == GREY
        fills = "(bars) => bars.map((bar) => getComputedStyle(bar).backgroundColor)"
        assert set(page.eval_on_selector_all(".bar .fill", fills)) == {"rgb(187, 187, 187)"}  # every bar greyed
        assert page.is_hidden("#uncalibrated")
        assert "unsure above a score of" in page.text_content("#provenance")
        page.set_input_files("#file", str(tmp_path / "garment.jpg"))  # then a garment: a plain answer again
        sure = post(f"{calibrated_server}/predict", garment_jpeg)[1]
        page.wait_for_function("() => document.getElementById('unsure').hidden", timeout=30_000)
        assert " ".join(page.inner_text("#answer").split()) == f"{sure['class']} ({100 * sure['probability']:.1f}%)"
        assert page.eval_on_selector("#answer", colour) != GREY
        browser.close()


def get_json(url: str) -> tuple[int, dict]:
    """GET `url`; (status, JSON answer)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_healthz_answers_without_the_model(server):
    status, health = get_json(f"{server}/healthz")
    assert status == 200 and health.pop("pid") != os.getpid()  # the server process's pid, not the test's
    assert health == {"status": "ok", "in_progress": 0, "decoding": 0, "queued": 0}


def test_concurrent_requests_each_get_the_answer_for_their_own_image(calibrated_server, garments):
    """Batched together, every answer still belongs to its own request's image: its class, probabilities and
    unsure verdict (garment photos and images that are none, mixed)."""
    images = [photo_like_jpeg(sample) for sample in garments["t10k-images-idx3-ubyte"][:6]] + [BLANK_PNG, DIGIT_PNG]
    alone = [post(f"{calibrated_server}/predict", image)[1] for image in images]
    assert {answer["unsure"] for answer in alone} == {True, False}
    with ThreadPoolExecutor(16) as clients:
        together = list(clients.map(lambda i: post(f"{calibrated_server}/predict", images[i % 8]), range(48)))
    for i, (status, answer) in enumerate(together):
        expected = alone[i % 8]
        assert status == 200 and answer["input_image"] == expected["input_image"]
        assert (answer["class"], answer["unsure"]) == (expected["class"], expected["unsure"])
        np.testing.assert_allclose(  # a batch of 1 or of 16: the same sums in another order
            [*answer["probabilities"].values(), answer["unsure_score"]],
            [*expected["probabilities"].values(), expected["unsure_score"]],
            atol=1e-5,
        )


def raw_request(port: int, body_start: bytes, content_length: int) -> socket.socket:
    """A connection that sent the headers of a POST /predict of `content_length` bytes and only `body_start`."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S + 5)
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {content_length}"
    connection.sendall(head.encode() + b"\r\n\r\n" + body_start)
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it does not)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_body_that_never_ends_gets_504_and_its_connection_closed_while_others_are_served(server, garment_jpeg):
    port = int(server.rsplit(":", 1)[1])
    with contextlib.closing(raw_request(port, garment_jpeg[:100], len(garment_jpeg))) as slow:
        assert post(f"{server}/predict", garment_jpeg)[0] == 200  # served while the slow body hangs
        # The answer, then the end of the connection, within the deadline plus the socket's 5 s; aiohttp alone
        # would keep reading the body's rest for another 10 s (its lingering time) before closing.
        head, _, body = read_until_closed(slow).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504") and b"Connection: close" in head
    assert f"the {DEADLINE_S} s deadline" in json.loads(body)["error"]
    assert post(f"{server}/predict", garment_jpeg)[0] == 200


def test_headers_that_never_end_get_the_connection_closed_after_the_deadline(server, garment_jpeg):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S + 5) as slow:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert post(f"{server}/predict", garment_jpeg)[0] == 200
        assert read_until_closed(slow) == b""  # closed, no answer: there is no request to answer yet


def test_clients_that_disconnect_mid_upload_leave_the_server_serving(server, garment_jpeg):
    port = int(server.rsplit(":", 1)[1])
    for _ in range(5):
        raw_request(port, garment_jpeg[:1000], 1_000_000).close()
    deadline = time.monotonic() + 5
    while get_json(f"{server}/healthz")[1]["in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices a closed connection at its next read
    assert get_json(f"{server}/healthz")[1]["in_progress"] == 0
    assert post(f"{server}/predict", garment_jpeg)[0] == 200


class HeldModel:
    """A fake uncalibrated model (uniform probabilities) that a test can hold mid-prediction, as a slow model
    would be."""

    calibration = None

    def __init__(self) -> None:
        self.release, self.running = threading.Event(), threading.Event()

    def __call__(self, images: np.ndarray) -> Answers:
        self.running.set()
        self.release.wait(HELD_S)
        return Answers(np.full((len(images), NUM_CLASSES), 1 / NUM_CLASSES, np.float32), None, None)


@contextlib.contextmanager
def in_process(app: web.Application) -> Iterator[str]:
    """`app` served on a free loopback port by an event loop in a thread; yields the base URL."""
    loop, port = asyncio.new_event_loop(), free_port()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=HELD_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=HELD_S)
        loop.close()


def test_a_full_server_answers_503_with_retry_after_and_health_still_answers(garment_jpeg):
    model = HeldModel()
    with in_process(serve.create_app(model, {}, serve.Limits(max_queue=1))) as url, ThreadPoolExecutor(1) as client:
        first = client.submit(post, f"{url}/predict", garment_jpeg)
        assert model.running.wait(HELD_S)  # the first request holds the one place, inside the model
        request = urllib.request.Request(f"{url}/predict", data=garment_jpeg, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert "1 requests in progress" in json.loads(refused.value.read())["error"]
        busy = {"status": "ok", "pid": os.getpid(), "in_progress": 1, "decoding": 0, "queued": 0}  # served in here
        assert get_json(f"{url}/healthz") == (200, busy)
        model.release.set()
        assert first.result(timeout=HELD_S)[0] == 200


def test_a_request_the_model_does_not_answer_in_time_gets_504(garment_jpeg):
    model = HeldModel()
    with in_process(serve.create_app(model, {}, serve.Limits(deadline_s=0.5))) as url:
        try:
            status, answer = post(f"{url}/predict", garment_jpeg)
        finally:
            model.release.set()
    assert status == 504 and "0.5 s deadline" in answer["error"]


def test_decoding_runs_off_the_event_loop(garment_jpeg, monkeypatch):
    decoding, release = threading.Event(), threading.Event()

    def held_decode(data: bytes) -> np.ndarray:
        decoding.set()
        release.wait(HELD_S)
        return np.zeros((28, 28), np.uint8)

    monkeypatch.setattr(serve, "decode", held_decode)
    model = HeldModel()
    model.release.set()
    with in_process(serve.create_app(model, {})) as url, ThreadPoolExecutor(1) as client:
        uploading = client.submit(post, f"{url}/predict", garment_jpeg)
        assert decoding.wait(HELD_S)
        assert get_json(f"{url}/healthz")[1]["decoding"] == 1  # answered while the decoder is busy
        release.set()
        assert uploading.result(timeout=HELD_S)[0] == 200


@pytest.mark.parametrize("spelling", ["relative", "dotted", "absolute"])
def test_provenance_matches_dvc_lock_however_the_model_path_is_spelled(tmp_path, monkeypatch, spelling):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.keras").write_bytes(b"weights")
    md5 = "a4d9e8fc33cb2b4b6a1e1fe2d9d6e3e4"  # what dvc.lock records: deliberately not the file's, then the file's
    lock = tmp_path / "dvc.lock"
    monkeypatch.chdir(tmp_path)
    path = {
        "relative": Path("models/model.keras"),
        "dotted": Path("./models/../models/model.keras"),
        "absolute": tmp_path / "models" / "model.keras",
    }[spelling]
    choice = ChosenModel(path, None, InferenceParams(tta="none", batch_size=8), None, None)
    for recorded, matches in ((md5, False), (hashlib.md5(b"weights").hexdigest(), True)):
        lock.write_text(
            yaml.safe_dump({"stages": {"train": {"outs": [{"path": "models/model.keras", "md5": recorded}]}}})
        )
        found = serve.provenance(choice, lock)
        assert (found["dvc_lock_md5"], found["matches_dvc_lock"]) == (recorded, matches)


def test_provenance_of_an_empty_dvc_lock_is_unknown_not_a_crash(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"weights")
    (tmp_path / "dvc.lock").write_text("")
    found = serve.provenance(
        ChosenModel(tmp_path / "model.keras", None, InferenceParams("none", 8), None, None), tmp_path / "dvc.lock"
    )
    assert found["dvc_lock_md5"] is None and found["matches_dvc_lock"] is False
