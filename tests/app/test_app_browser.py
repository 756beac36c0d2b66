"""The real page in headless Chromium: upload the example case, segment it, see the overlay and the table.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; the test set-up
installs it, nothing downloads a browser at run time) driven by the
``playwright`` package's bundled driver.  The screenshot is kept as
``test-artifacts/app.png``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
# Offline machine: without these Chromium stalls on background connections.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log_path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def app_url(tiny_model, tmp_path):
    """`streamlit run` on a free localhost port with the tiny model; stopped afterwards."""
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "streamlit_app.py"),
               "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
               "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
               "--", f"--model={tiny_model}"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, server, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_uploaded(sync_api, page, paths) -> None:
    """Every file shows as a chip with its size (the upload has reached the server)."""
    chips = page.locator("[data-testid='stFileChip']")
    sync_api.expect(chips).to_have_count(len(paths), timeout=30_000)
    for path in paths:
        chip = chips.filter(has=page.locator(f"[title='{os.path.basename(path)}']"))
        sync_api.expect(chip).to_contain_text("B", timeout=30_000)


def _example_case(tiny_model, folder) -> list[str]:
    """The example patient written as files on the model's own grid (another grid is refused, as it should be)."""
    from app import session
    from serving import predictor as predictor_lib

    predictor = predictor_lib.load_predictor(str(tiny_model), with_model=False)
    shape = session.example_shape(predictor.preprocess_cfg, predictor.expected)
    folder.mkdir()
    paths = []
    for upload in session.example_uploads(shape):
        (folder / upload.name).write_bytes(upload.data)
        paths.append(str(folder / upload.name))
    return paths


def _open(browser, app_url):
    """A page on the app, tall enough for the whole page (Streamlit scrolls inside its own container),
    and its Segment button once the page is ready."""
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(app_url, timeout=60_000)
    segment = page.get_by_role("button", name="Segment")
    segment.wait_for(timeout=120_000)
    return page, segment


def _upload(sync_api, page, paths) -> None:
    page.locator("[data-testid='stFileUploader'] input[type=file]").first.set_input_files(paths)
    _wait_uploaded(sync_api, page, paths)


def _wait_table(page, timeout_ms: int = 240_000):
    """The scores table after Segment; on a timeout, what the page said instead (its alerts, any exception)."""
    table = page.locator("[data-testid='stTable'] table")
    try:
        table.wait_for(timeout=timeout_ms)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "app-timeout.png"))
        said = page.locator("[data-testid='stAlert'], [data-testid='stException']").all_inner_texts()
        pytest.fail(f"no scores table within {timeout_ms / 1000:.0f} s; the page said: {said}")
    return table


def test_upload_the_example_and_see_the_segmentation(app_url, tiny_model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    paths = _example_case(tiny_model, tmp_path / "case")
    (tmp_path / "notes.txt").write_text("not a scan")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page, segment = _open(browser, app_url)
            _upload(sync_api, page, paths)
            segment.click()
            table = _wait_table(page)
            page.get_by_text("Download the segmentation").wait_for(timeout=30_000)

            text = table.inner_text()
            for expected in ("WT = NCR + ED + ET", "TC = NCR + ET", "Necrotic", "Volume (mL)", "Dice", "HD95"):
                assert expected in text
            images = page.locator("[data-testid='stImage'] img")
            assert images.count() == 3
            sizes = images.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert all(done and w > 50 and h > 50 for done, w, h in sizes), sizes
            assert page.get_by_text("Enhancing tumour").count() >= 1  # legend
            assert page.locator("[data-testid='stException']").count() == 0
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "app.png"))

            # A file that is not NIfTI: an error message on the page, no traceback.
            page.goto(app_url, timeout=60_000)
            segment.wait_for(timeout=60_000)
            _upload(sync_api, page, paths[:3] + [str(tmp_path / "notes.txt")])
            segment.click()
            alert = page.locator("[data-testid='stAlert']").filter(has_text="is not a NIfTI file")
            alert.first.wait_for(timeout=60_000)  # as it arrives, and again when Segment is pressed
            assert all("notes.txt is not a NIfTI file" in text for text in alert.all_inner_texts())
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "app-bad-upload.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000


def test_a_crafted_upload_is_a_message_and_the_server_goes_on(app_url, tiny_model, tmp_path):
    """A 2 MB file whose header claims 1024³ voxels (issue 21): refused as it arrives, the server stays up."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from tests import hostile

    paths = _example_case(tiny_model, tmp_path / "case")
    crafted = tmp_path / "crafted" / os.path.basename(paths[0])
    crafted.parent.mkdir()
    crafted.write_bytes(hostile.claims_cube(1024, fill_bytes=2 << 20))
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page, segment = _open(browser, app_url)
            _upload(sync_api, page, [str(crafted)] + paths[1:])
            alert = page.locator("[data-testid='stAlert']").filter(has_text="1024x1024x1024")
            alert.first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "app-crafted-upload.png"))

            with urllib.request.urlopen(f"{app_url}/_stcore/health", timeout=10) as response:
                assert response.read().strip() == b"ok"
            page, segment = _open(browser, app_url)  # the next request: the good case segments
            _upload(sync_api, page, paths)
            segment.click()
            _wait_table(page)
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()
