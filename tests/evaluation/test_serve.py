"""evaluation.serve and ``indexnet serve``: the page and its API on a real uvicorn server on
loopback, answering the PNG bytes ``indexnet predict`` writes; a headless Chromium through
the page."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("starlette")  # the serve extra (in dev)
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from configs import ModelConfig  # noqa: E402
from evaluation.serve import bind, make_app, url_of  # noqa: E402
from indexnet_cli import app as cli_app  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.checkpoint import load_for_inference, save_checkpoint  # noqa: E402
from training.models.build import build_model  # noqa: E402
from training.models.indexnet.network import IndexNet  # noqa: E402

runner = CliRunner()
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS = REPO / "docs"


def _photo(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a warm disc on a cool gradient, values following from the index."""
    y, x = np.mgrid[:height, :width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 160)], axis=2)
    inside = (y - height / 2) ** 2 + (x - width / 2) ** 2 < (min(height, width) / 3) ** 2
    rgb[inside] = np.stack([230 - y[inside] % 40, 120 + x[inside] % 50, 40 + 0 * x[inside]], 1)
    return rgb.astype(np.uint8)


def _trimap(height: int, width: int) -> np.ndarray:
    """Background on the left third, unknown in the middle, foreground on the right; a few
    soft values that reading quantises."""
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:, : width // 3] = 0
    trimap[:, 2 * width // 3 :] = 255
    trimap[:3, :] = 200  # -> 255
    return trimap


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _phone_jpeg(upright: np.ndarray) -> bytes:
    """``upright`` stored sideways as a phone does, with the EXIF tag that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(
        buffer, format="JPEG", quality=92, exif=exif
    )
    return buffer.getvalue()


@contextmanager
def running(app) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free loopback port, in a thread; its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def _post(url: str, files: dict, query: str = "", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}api/predict{query}", files=files, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def indexnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "indexnet.pt", IndexNet())


@pytest.fixture(scope="module")
def vitmatte_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")  # the vitmatte extra (in dev)
    torch.manual_seed(1)
    model = build_model(ModelConfig(family="vitmatte"))  # ViTMatte-S, the smallest there is
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "vitmatte.pt", model)


@pytest.fixture(scope="module")
def server(indexnet_checkpoint: Path) -> Iterator[str]:
    """The IndexNet checkpoint served with a 40 kB upload limit."""
    app = make_app(load_for_inference(indexnet_checkpoint), max_upload_bytes=40_000)
    with running(app) as url:
        yield url


def _predict_cli(checkpoint: Path, image: Path, trimap: Path, out: Path) -> tuple[bytes, bytes]:
    """The alpha and cut-out PNG bytes ``indexnet predict --cutout`` writes."""
    args = ["predict", "--checkpoint", str(checkpoint), str(image), str(trimap)]
    result = runner.invoke(cli_app, [*args, "-o", str(out), "--cutout"])
    assert result.exit_code == 0, result.output
    return out.read_bytes(), out.with_name(f"{out.stem}_cutout.png").read_bytes()


# -- the API answers what indexnet predict writes ---------------------------------------------


@pytest.mark.parametrize("family", ["indexnet", "vitmatte"])
def test_predict_is_byte_for_byte_indexnet_predict(request, family, tmp_path):
    checkpoint = request.getfixturevalue(f"{family}_checkpoint")
    image, trimap = tmp_path / "phone.jpg", tmp_path / "trimap.png"
    image.write_bytes(_phone_jpeg(_photo(50, 70)))  # EXIF-rotated: read upright by both
    trimap.write_bytes(_png(_trimap(50, 70)))  # soft values: quantised by both
    alpha, cut = _predict_cli(checkpoint, image, trimap, tmp_path / "alpha.png")

    app = make_app(load_for_inference(checkpoint), checkpoint=checkpoint.name)
    with running(app) as url:
        files = {
            "image": ("phone.jpg", image.read_bytes(), "image/jpeg"),
            "trimap": ("trimap.png", trimap.read_bytes(), "image/png"),
        }
        got_alpha, got_cut = _post(url, files), _post(url, files, "?cutout=1")
        info = httpx.get(f"{url}api/info").json()
    assert got_alpha.status_code == 200 and got_alpha.headers["content-type"] == "image/png"
    assert got_alpha.content == alpha
    assert got_cut.status_code == 200 and got_cut.content == cut
    assert Image.open(io.BytesIO(got_cut.content)).mode == "RGBA"
    assert info["family"] == family and info["checkpoint"] == checkpoint.name
    assert info["device"] == "cpu" and info["waiting"] == 0 and info["running"] == 0


def test_the_page_is_served(server):
    page = httpx.get(server)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ("photo-input", "trimap-input", "predict", "download-trimap", "error"):
        assert f'id="{element}"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched elsewhere


def test_a_trimap_with_no_unknown_pixel_is_predicted(server):
    trimap = np.zeros((32, 48), np.uint8)
    trimap[:, 24:] = 255
    files = {"image": ("p.png", _png(_photo(32, 48))), "trimap": ("t.png", _png(trimap))}
    response = _post(server, files)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), trimap)


# -- bad input: 400 and a message naming the field and what to do -----------------------------


def _case(name: str):
    photo, trimap = _png(_photo(32, 48)), _png(_trimap(32, 48))
    return {
        "missing trimap": (
            {"image": ("p.png", photo)},
            ["field trimap is missing", "send its trimap as a file"],
        ),
        "missing image": ({"trimap": ("t.png", trimap)}, ["field image is missing"]),
        "unreadable image": (
            {"image": ("p.png", b"this is not a PNG"), "trimap": ("t.png", trimap)},
            ["field image (p.png): not an image Pillow can read", "PNG, JPEG"],
        ),
        "truncated image": (
            {"image": ("p.png", photo[:200]), "trimap": ("t.png", trimap)},
            ["field image (p.png): cannot read the image", "export it again"],
        ),
        "sizes differ": (
            {"image": ("p.png", photo), "trimap": ("t.png", _png(_trimap(30, 48)))},
            ["field image (p.png) is 48x32", "field trimap (t.png) is 48x30", "image's size"],
        ),
        "colour trimap": (
            {
                "image": ("p.png", photo),
                "trimap": ("t.png", _png(np.dstack([_trimap(32, 48)] * 3))),
            },
            ["field trimap (t.png)", "single-channel", "RGB (3 channels)", "mode L"],
        ),
        "too large": (
            {"image": ("p.png", os.urandom(50_000)), "trimap": ("t.png", trimap)},
            ["larger than the limit of", "--max-upload-mb"],
        ),
    }[name]


@pytest.mark.parametrize(
    "name",
    [
        "missing trimap",
        "missing image",
        "unreadable image",
        "truncated image",
        "sizes differ",
        "colour trimap",
        "too large",
    ],
)
def test_bad_input_is_400_json_naming_the_field(server, name):
    files, messages = _case(name)
    response = _post(server, files)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for message in messages:
        assert message in error, error


def test_a_body_that_is_not_multipart_is_400(server):
    response = httpx.post(f"{server}api/predict", json={"image": "photo.jpg"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]


# -- one prediction at a time, a bounded queue ------------------------------------------------


class _Blocking(torch.nn.Module):
    """A network that waits for ``release`` before it predicts (``entered`` set on the way)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.cfg = inner, inner.cfg
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(60), "never released"
        return self.inner(x)


def test_a_full_queue_is_answered_503_at_once(indexnet_checkpoint):
    model = _Blocking(load_for_inference(indexnet_checkpoint))
    files = {"image": ("p.png", _png(_photo(32, 48))), "trimap": ("t.png", _png(_trimap(32, 48)))}
    with running(make_app(model, queue=1)) as url:
        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(_post(url, files).status_code))]
        threads[0].start()
        assert model.entered.wait(30)  # the first is running (and blocked)
        threads.append(
            threading.Thread(target=lambda: answers.append(_post(url, files).status_code))
        )
        threads[1].start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}api/info").json()["waiting"] != 1:  # the second is queued
            assert time.monotonic() < deadline
            time.sleep(0.02)
        start = time.monotonic()
        refused = _post(url, files)
        assert refused.status_code == 503 and time.monotonic() - start < 5
        assert refused.json() == {"error": "busy: 1 predictions queued; try again"}
        model.release.set()
        for thread in threads:
            thread.join(60)
    assert answers == [200, 200]


# -- the command ------------------------------------------------------------------------------


def test_cli_refuses_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope.pt"
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(missing), "--port", "0"])
    assert result.exit_code == 2
    assert f"{missing}: no such checkpoint file or folder" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--queue", "-1"], "--queue must be >= 0"), (["--device", "nonsense"], "not a device")],
)
def test_cli_refuses_bad_options(indexnet_checkpoint, args, message):
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(indexnet_checkpoint), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_without_the_serve_extra_names_it(monkeypatch, indexnet_checkpoint):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "evaluation.serve")
    result = runner.invoke(cli_app, ["serve", "--checkpoint", str(indexnet_checkpoint)])
    assert result.exit_code == 2
    assert 'uvicorn is missing): pip install "indexnet-matting[serve]"' in result.output


def test_cli_prints_the_url_and_serves(indexnet_checkpoint):
    command = [sys.executable, "-m", "indexnet_cli", "serve", "--checkpoint"]
    process = subprocess.Popen(
        [*command, str(indexnet_checkpoint), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("serving indexnet.pt on http://127.0.0.1:"), line
        url = line.split(" on ")[1].split()[0]
        assert httpx.get(f"{url}api/info", timeout=30).json()["family"] == "indexnet"
    finally:
        process.terminate()
        process.wait(30)


# -- the page in a headless Chromium ----------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by selenium (chromium and chromedriver from the OS)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "chromium and chromedriver are not on PATH: apt-get install chromium chromium-driver "
            "(make test does it where it can)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    yield driver
    driver.quit()


_FETCH = """
const done = arguments[arguments.length - 1];
Promise.all(arguments[0].map((id) => fetch(document.getElementById(id).href)
  .then((r) => r.arrayBuffer()).then((buffer) => {
    const bytes = new Uint8Array(buffer); let text = "";
    for (let i = 0; i < bytes.length; i += 32768) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    }
    return btoa(text);
  }))).then(done, (error) => done("failed: " + error));
"""


def _stroke(driver, canvas, points: list[tuple[float, float]]) -> None:
    """Drag over ``canvas`` through points given as fractions of its size from its top left."""
    from selenium.webdriver.common.action_chains import ActionChains

    width, height = canvas.size["width"], canvas.size["height"]

    def offset(fx: float, fy: float) -> tuple[int, int]:  # selenium 4: from the centre
        return int((fx - 0.5) * width), int((fy - 0.5) * height)

    chain = ActionChains(driver).move_to_element_with_offset(canvas, *offset(*points[0]))
    chain.click_and_hold()
    for point in points[1:]:
        chain.move_to_element_with_offset(canvas, *offset(*point))
    chain.release().perform()


def _use(driver, tool: str, brush: int) -> None:
    driver.find_element("id", f"tool-{tool}").click()
    driver.execute_script(
        "const b = document.getElementById('brush-size'); b.value = arguments[0];"
        "b.dispatchEvent(new Event('input'));",
        brush,
    )


@pytest.mark.browser
def test_the_page_paints_a_trimap_and_predicts_what_indexnet_predict_does(
    browser, indexnet_checkpoint, tmp_path
):
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(_photo(160, 240)))
    app = make_app(load_for_inference(indexnet_checkpoint), checkpoint=indexnet_checkpoint.name)
    with running(app) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        browser.find_element("id", "photo-input").send_keys(str(photo))
        wait.until(lambda d: d.find_element("id", "predict").is_enabled())
        canvas = browser.find_element("id", "canvas")
        # a rough scribble over the disc, made into a trimap with an 8-pixel band
        browser.find_element("id", "band-width").clear()
        browser.find_element("id", "band-width").send_keys("8")
        _use(browser, "scribble", 90)
        _stroke(browser, canvas, [(0.38, 0.4), (0.62, 0.4), (0.62, 0.6), (0.38, 0.6)])
        browser.find_element("id", "make-trimap").click()
        # then a background stroke along the edges and a foreground dab in the middle
        _use(browser, "bg", 30)
        _stroke(browser, canvas, [(0.03, 0.05), (0.97, 0.05), (0.97, 0.95), (0.03, 0.95)])
        _use(browser, "fg", 12)
        _stroke(browser, canvas, [(0.48, 0.5), (0.52, 0.5)])
        browser.find_element("id", "predict").click()
        wait.until(lambda d: d.find_element("id", "status").text.startswith("done"))
        assert browser.find_element("id", "error").text == ""
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve.png"))
        if os.environ.get("INDEXNET_UPDATE_DOCS") == "1":  # regenerate docs/serve.png
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(ARTIFACTS / "serve.png", DOCS / "serve.png")
        ids = ["download-alpha", "download-cutout", "download-trimap"]
        fetched = browser.execute_async_script(_FETCH, ids)
        assert all(not f.startswith("failed") for f in fetched), fetched
        alpha, cut, trimap_png = (base64.b64decode(f) for f in fetched)

        # the wrong-size trimap is refused in the page, the server's error text shown there
        wrong = tmp_path / "wrong.png"
        wrong.write_bytes(_png(_trimap(100, 100)))
        browser.find_element("id", "trimap-input").send_keys(str(wrong))
        wait.until(
            lambda d: "but the trimap wrong.png is 100x100" in d.find_element("id", "error").text
        )

    trimap_file = tmp_path / "trimap.png"
    trimap_file.write_bytes(trimap_png)
    with Image.open(trimap_file) as written:
        assert written.mode == "L" and written.size == (240, 160)
        marks = np.asarray(written)
    assert set(np.unique(marks).tolist()) == {0, 128, 255}  # all three, nothing in between
    assert (marks[0, :] == 0).all() or (marks[:3, 10:230] == 0).all()  # the edge stroke
    assert marks[80, 120] == 255  # the middle of the scribble, eroded, is foreground
    expected_alpha, expected_cut = _predict_cli(
        indexnet_checkpoint, photo, trimap_file, tmp_path / "alpha.png"
    )
    assert alpha == expected_alpha and cut == expected_cut


@pytest.mark.browser
def test_the_page_shows_the_servers_error(browser, indexnet_checkpoint, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(_photo(64, 96)))
    app = make_app(load_for_inference(indexnet_checkpoint), max_upload_bytes=1000)
    from selenium.webdriver.support.ui import WebDriverWait

    with running(app) as url:
        browser.get(url)
        browser.find_element("id", "photo-input").send_keys(str(photo))
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element("id", "predict").is_enabled())
        browser.find_element("id", "predict").click()
        wait.until(lambda d: "larger than the limit" in d.find_element("id", "error").text)
