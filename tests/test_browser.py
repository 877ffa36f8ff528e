# End to end in a real browser: the studio served on 127.0.0.1, driven through Debian's headless Chromium with
# Playwright (never a downloaded browser): upload, move d, a short unlearning, after-images that differ from the
# before-images, a bad upload that leaves the app usable, and a second visitor who never sees the first one's G_u.
from __future__ import annotations

import io
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = os.environ.get("GUIDE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STEP_TIMEOUT_MS = 240_000  # a loaded 2-core CI machine: generous, the assertions are about effects, not speed

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GUIDE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright for Python is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The studio on a free port in this process, serving the tiny test model (the same bundle the handler tests use).
@pytest.fixture(scope="module")
def studio_url():
    _require_browser()
    from demo import app as demo_app
    from demo import handlers
    from demo.handlers import common
    from guide_core import registry
    from tests.test_demo_handlers import TINY, tiny_bundle

    registry.register_model(TINY, tiny_bundle, "tiny seeded model for the studio's tests")
    original = handlers.available_models
    handlers.available_models = lambda: [TINY]
    try:
        blocks = demo_app.build_app()
    finally:
        handlers.available_models = original
    port = _free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                  **demo_app.launch_kwargs())
    yield f"http://127.0.0.1:{port}/"
    blocks.close()
    registry.unregister_model(TINY)
    common._BUNDLES.pop(TINY, None)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _photo(tmp_path: Path, name: str, seed: int) -> Path:
    from tests.test_demo_handlers import make_photo

    return make_photo(tmp_path, name, seed=seed, size=128)


# The pixels an <img> inside the component with this elem_id shows (fetched by the page's own session).
def _pixels(page, elem_id: str) -> np.ndarray:
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible", timeout=STEP_TIMEOUT_MS)
    src = img.get_attribute("src")
    body = page.request.get(src).body() if not src.startswith("data:") else None
    if body is None:
        import base64
        body = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)


def _src(page, elem_id: str) -> str | None:
    img = page.locator(f"#{elem_id} img")
    return img.first.get_attribute("src") if img.count() else None


def _upload(page, path: Path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(path))


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


# Wall-clock seconds of each step of the flow, printed at the end (pytest -s shows them).
class Clock:
    def __init__(self):
        import time
        self.now, self.start, self.laps = time.perf_counter, time.perf_counter(), []

    def lap(self, name: str) -> None:
        t = self.now()
        self.laps.append((name, t - self.start))
        self.start = t

    def __str__(self) -> str:
        return " | ".join(f"{name} {seconds:.1f}s" for name, seconds in self.laps)


def test_full_flow_in_chromium(studio_url, browser, tmp_path):
    clock = Clock()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    outside: list[str] = []  # every request the page makes to anything but the studio itself
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((studio_url, "data:", "blob:")) else None)
    page.goto(studio_url)
    page.locator("#status").get_by_text("selected").wait_for()
    clock.lap("page load")

    # Bad input first: a text file posing as a JPEG gives a clear message and the app keeps working.
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    _upload(page, bad)
    page.get_by_text("not an image").first.wait_for()
    clock.lap("bad upload message")

    # Upload -> detected face, aligned crop, inversion, target render.
    _upload(page, _photo(tmp_path, "person.png", seed=3))
    page.locator("#status").get_by_text("Inverted").wait_for()
    for elem_id in ("detected", "aligned", "inversion"):
        page.locator(f"#{elem_id} img").first.wait_for(state="visible")
    clock.lap("upload + inversion")

    # Move d: the target render changes.
    _tab(page, "2 · UFO target")
    page.locator("#target img").first.wait_for(state="visible")
    target_before, old_src = _pixels(page, "target"), _src(page, "target")
    _set_number(page, "d", 0)
    page.wait_for_function("(old) => { const i = document.querySelector('#target img'); return i && i.src !== old; }",
                           arg=old_src)
    assert np.abs(_pixels(page, "target") - target_before).max() > 0, "moving d did not change the target render"
    page.locator("#ufo-plot").get_by_text("d = 0").first.wait_for()
    page.screenshot(path=str(tmp_path / "studio_ufo.png"), full_page=True)
    clock.lap("move d")

    # A short unlearning (the tiny model's default: 3 iterations) streams to "Finished".
    _tab(page, "3 · Unlearn")
    page.locator("#run").click()
    page.locator("#run-status").get_by_text("Finished").wait_for()
    page.locator("#previews img").first.wait_for(state="visible")

    # Cancel: a long run stops within one iteration and the page stays usable; then a short run again. The run is the
    # slider's longest, so that on an idle machine it cannot finish before the click arrives.
    _set_number(page, "cfg-iters", 2000)
    page.locator("#run").click()
    page.locator("#run-status").get_by_text(re.compile(r"iteration \d+/2000")).wait_for()  # the long run is going
    page.locator("#cancel").click()
    page.locator("#run-status").get_by_text("Cancelled after").wait_for()
    _set_number(page, "cfg-iters", 3)
    page.locator("#run").click()
    page.locator("#run-status").get_by_text("Finished 3/3").wait_for()
    page.screenshot(path=str(tmp_path / "studio_unlearn.png"), full_page=True)
    clock.lap("unlearning run")

    # Multi-view: the after-image appears and differs from the before-image.
    _tab(page, "4 · Multi-view check")
    page.locator("#after img").first.wait_for(state="visible")
    before, after = _pixels(page, "before"), _pixels(page, "after")
    assert before.shape == after.shape
    diff = np.abs(before - after).mean()
    assert diff > 0.5, f"after-image equals the before-image (mean |diff| {diff:.3f})"
    clock.lap("multi-view")
    shot = tmp_path / "studio_after_unlearning.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("GUIDE_SCREENSHOT_DIR")
    if keep:
        for name in (shot.name, "studio_ufo.png", "studio_unlearn.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)

    # A second visitor (fresh browser context = fresh session) uploads too: no unlearned generator for them.
    other = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    other.set_default_timeout(STEP_TIMEOUT_MS)
    other.goto(studio_url)
    other.locator("#status").get_by_text("selected").wait_for()
    _upload(other, _photo(tmp_path, "someone.png", seed=4))
    other.locator("#status").get_by_text("Inverted").wait_for()
    _tab(other, "4 · Multi-view check")
    _set_number(other, "yaw", 5)
    other.locator("#before img").first.wait_for(state="visible")
    assert other.locator("#after img").count() == 0, "the second visitor sees the first visitor's G_u"
    other.context.close()

    # The first visitor's session still has its G_u.
    _set_number(page, "yaw", 10)
    page.wait_for_timeout(1500)
    assert page.locator("#after img").count() >= 1
    page.close()
    assert not outside, f"the page reached outside the studio: {outside[:5]}"
    clock.lap("second visitor + isolation check")
    print(f"\nbrowser flow timings: {clock}")
