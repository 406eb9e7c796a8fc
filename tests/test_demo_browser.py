"""The web page in a real browser: demo.py serves a tiny run on a free local port, headless
Chromium (Debian's chromium and chromedriver, driven by Selenium) uploads a HybrIK result, waits
for the caption, and checks it against caption.py; bad uploads show a message and the page keeps
working; a test clip shows its references and metrics. Skipped when gradio, selenium, chromium or
chromedriver is missing (see requirements-demo.txt and the README's install lines), and failed
instead under CI=true; either is decided before the tiny run is trained.

The README's screenshot is made by the same steps over the synthetic run:

    python -m tests.test_demo_browser --run results/synthetic --out docs/demo.png
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1900")
SERVER_START_S = 90
CAPTION_S = 60
MAX_NEW = 8
BUSY = "Captioning..."  # demo.BUSY, the status while a caption is being made


# ============================================================================ what is needed =
def missing_parts() -> list[str]:
    """Everything the browser test needs and this machine lacks, each with how to install it."""
    missing = [f"{module} is not installed (pip install -r requirements-demo.txt)"
               for module in ("gradio", "selenium") if importlib.util.find_spec(module) is None]
    if browser_binary() is None:
        missing.append("no chromium binary (apt-get install -y chromium chromium-driver)")
    if shutil.which("chromedriver") is None:
        missing.append("no chromedriver (apt-get install -y chromium-driver)")
    return missing


def missing_requirements() -> str | None:
    """Why the browser test cannot run here, or None."""
    return "; ".join(missing_parts()) or None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_browser() -> None:
    """Return when the browser test can run; else skip it, or fail it under CI=true (where the
    README's install lines ran, so a missing part is a broken install, not an optional one)."""
    reason = missing_requirements()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"browser test under CI=true: {reason}", pytrace=False)
    pytest.skip(f"browser test: {reason}")


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Checked before ``tiny_run`` (same scope, asked for first), so a skip trains nothing."""
    require_browser()


def browser_binary() -> str | None:
    return next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ============================================================================ server, browser
@contextmanager
def serve(run: Path, log_path: Path) -> Iterator[str]:
    """``python demo.py --run RUN`` on a free port of 127.0.0.1; yields its URL, stops it after."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"), "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(log_path.parent / "gradio"), "PYTHONPATH": str(REPO)}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "demo.py", "--run", str(run), "--port", str(port), "--device", "cpu"],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"demo.py exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"demo.py did not answer within {SERVER_START_S} s: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def chromium(profile: Path) -> Iterator["object"]:
    """Headless Chromium driven by Selenium, with a fresh profile and nothing that goes online."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_binary()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The demo page as a person uses it: upload, pick, click, read."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.common.by import By

        self.d, self.by = driver, By
        driver.get(url)
        self.wait_for(lambda: driver.find_elements(By.ID, "caption_button"), 30, "the page to load")

    def wait_for(self, condition, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {seconds} s waiting for {what}; status: {self.status()!r}")

    def find(self, css: str):
        return self.d.find_element(self.by.CSS_SELECTOR, css)

    def status(self) -> str:
        found = self.d.find_elements(self.by.ID, "status")
        return found[0].text if found else ""

    def captions(self) -> list[str]:
        value = self.find("#captions textarea").get_attribute("value")
        return value.split("\n") if value else []

    def settled_status(self) -> str:
        """The status once its handler has finished ("" while Gradio still shows a pending timer)."""
        status = self.status()
        return "" if re.match(r"[\d.]+\s*s\b", status) or status == BUSY else status

    def upload(self, path: Path, expect: str) -> str:
        """Upload a motion file and wait until the status, changed by the upload, mentions ``expect``."""
        before = self.status()
        clear = self.d.find_elements(self.by.CSS_SELECTOR, "#motion_file button[aria-label='Clear']")
        if clear:
            clear[0].click()
            self.wait_for(lambda: self.d.find_elements(self.by.CSS_SELECTOR, "#motion_file input[type=file]"),
                          10, "the upload box")
        self.find("#motion_file input[type=file]").send_keys(str(path))

        def read():
            status = self.settled_status()
            return status != before and path.stem in status and expect in status and status

        return self.wait_for(read, 30, f"{expect!r} about {path.name} in the status")

    def choose(self, element_id: str, option: str) -> None:
        """Pick ``option`` of a dropdown."""
        self.find(f"#{element_id} input").click()
        self.wait_for(lambda: self.d.find_elements(self.by.CSS_SELECTOR, "li[data-testid='dropdown-option']"),
                      10, "the options")
        self.find(f'li[data-testid="dropdown-option"][aria-label="{option}"]').click()
        self.wait_for(lambda: self.find(f"#{element_id} input").get_attribute("value") == option, 10, option)

    def decoding(self, mode: str, **numbers: int) -> None:
        from selenium.webdriver.common.keys import Keys

        def shown():
            return [e for e in self.d.find_elements(self.by.CSS_SELECTOR, "#decoding input") if e.is_displayed()]

        if not shown():  # open the Decoding accordion
            self.d.find_element(self.by.XPATH, "//button[.//*[normalize-space(text())='Decoding']]").click()
            self.wait_for(shown, 10, "the decoding options")
        self.find(f"#decoding input[value='{mode}']").click()
        for element_id, value in numbers.items():
            box = self.find(f"#{element_id} input[type=number]")
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(str(value), Keys.TAB)
            self.wait_for(lambda: box.get_attribute("value") == str(value), 10, f"{element_id} = {value}")

    def caption(self) -> tuple[list[str], bool, float]:
        """Click Caption; (captions, whether a progress indicator showed, seconds)."""
        before = self.status()
        start = time.monotonic()
        self.find("#caption_button").click()
        seen_progress = changed = False

        def done():  # the page first says "Captioning...", then the result or the error
            nonlocal seen_progress, changed
            seen_progress = seen_progress or bool(self.d.find_elements(
                self.by.CSS_SELECTOR, ".progress-text, .eta-bar, .progress-level, .meta-text"))
            status = self.settled_status()
            changed = changed or self.status() != before
            return changed and ("caption(s) in" in status or "Could not caption" in status) and status

        self.wait_for(done, CAPTION_S, "the caption")
        return self.captions(), seen_progress, time.monotonic() - start

    def picture(self, element_id: str) -> tuple[int, int, bytes]:
        """(shown width, shown height, the file's bytes) of an image output, once it is loaded."""
        img = self.wait_for(lambda: [i for i in self.d.find_elements(self.by.CSS_SELECTOR, f"#{element_id} img")
                                     if self.d.execute_script("return arguments[0].complete && "
                                                              "arguments[0].naturalWidth", i)],
                            20, f"the {element_id} picture")[0]
        with urllib.request.urlopen(img.get_attribute("src"), timeout=10) as reply:
            data = reply.read()
        return img.size["width"], img.size["height"], data


def caption_py(*args: str) -> dict[str, list[str]]:
    """caption.py's --json output, as a separate process (as a user runs it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "caption.py", *args, "--json"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def hybrik_result(coords: np.ndarray, path: Path) -> Path:
    """A project-frame clip written as HybrIK's res.pk (camera axes, 2.2 m units, root-relative)."""
    raw = (coords - coords[:, :1]) * np.array([1.0, -1.0, -1.0], dtype=np.float32) / 2.2
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"pred_xyz_24_struct": np.concatenate([raw, raw[:, :2]], axis=1),
                     "img_path": np.array([f"image-{i:06d}.jpg" for i in range(len(raw))])}, f)
    return path


# ============================================================================ the test =======
class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_page_in_a_browser(browser_ready, tiny_run, tmp_path):
    from PIL import Image

    from dataloaders.records import load_records

    started = time.monotonic()
    clips = load_records(tiny_run / "data" / "test.pkl")
    # clips whose caption (as training wrote it) is not empty. So small a model may write one text
    # for every clip: which clip the page captions is checked by its animation's frames and its
    # references, the decoding by texts equal to caption.py's, greedy and sampled
    written = json.loads((tiny_run / "predictions" / "test_best.json").read_text())
    worded = [rec for rec in clips if written[rec["video_name"]].strip()]
    assert len(worded) >= 2, written
    learner, test_clip = worded[0], worded[-1]
    sampled = [caption_py("--run", str(tiny_run), str(tiny_run / "data" / "test.pkl"), "--video_name",
                          test_clip["video_name"], "--standard", str(tiny_run / "data" / "standard.pkl"), "--sample",
                          "--temperature", "2", "--seed", seed, "--max_new_tokens", str(MAX_NEW),
                          "--num_return_sequences", "2")[test_clip["video_name"]] for seed in ("3", "4")]
    assert sampled[0] != sampled[1], sampled  # the seed matters, so equal sampled texts mean the same seed
    upload = hybrik_result(learner["coordinates"], tmp_path / "upload" / "res.pk")
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"pred_xyz_29": _RunsCode(tmp_path / "ran")}))
    with serve(tiny_run, tmp_path / "server.log") as url, chromium(tmp_path / "profile") as driver:
        page = Page(driver, url)
        # a HybrIK result, the standard picked by motion type, greedy decoding
        assert "frames" in page.upload(upload, "frames")
        page.choose("standard", learner["motion_type"])
        page.decoding("greedy", max_new_tokens=MAX_NEW)
        texts, progress_shown, seconds = page.caption()
        assert progress_shown, "no progress indicator while captioning"
        expected = caption_py("--run", str(tiny_run), str(upload), "--standard", str(tiny_run / "data" / "standard.pkl"),
                              "--motion_type", learner["motion_type"], "--max_new_tokens", str(MAX_NEW))
        assert texts == expected["upload"] and texts[0], (texts, expected)
        width, height, gif = page.picture("animation")
        assert width > 200 and height > 100
        with Image.open(io.BytesIO(gif)) as animation:
            assert animation.format == "GIF" and animation.n_frames == len(learner["coordinates"])
        for element_id in ("node_attention", "cross_attention", "key_frames"):
            width, height, png = page.picture(element_id)
            assert width > 100 and height > 100 and png[:8] == b"\x89PNG\r\n\x1a\n", element_id
        driver.save_screenshot(str(tmp_path / "demo.png"))
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        # bad uploads: a message on the page, nothing run, and the page keeps working
        assert "not a readable .npy" in page.upload(tmp_path / "bad.npy", "Could not read")
        assert "refused to unpickle" in page.upload(tmp_path / "evil.pkl", "Could not read")
        texts_bad, _, _ = page.caption()
        assert "Could not caption" in page.status() and texts_bad == []
        assert not (tmp_path / "ran").exists()
        # a test clip: beam search, two captions, its references and metrics
        page.find("#source input[value='test clip']").click()
        page.choose("test_clip", test_clip["video_name"])
        page.choose("standard", "the clip's own motion type")
        page.decoding("beam search", num_beams=3, num_return_sequences=2, max_new_tokens=MAX_NEW)
        texts, _, _ = page.caption()
        expected = caption_py("--run", str(tiny_run), str(tiny_run / "data" / "test.pkl"), "--video_name",
                              test_clip["video_name"], "--standard", str(tiny_run / "data" / "standard.pkl"),
                              "--num_beams", "3", "--num_return_sequences", "2", "--max_new_tokens", str(MAX_NEW))
        assert texts == expected[test_clip["video_name"]] and len(texts) == 2
        references = page.find("#references").text
        assert test_clip["labels"][0] in references and "CIDEr-D" in references and "BLEU-4" in references
        # sampling at temperature 2, seed 3: the very texts caption.py samples for this clip
        page.decoding("sampling", num_return_sequences=2, seed=3, temperature=2, max_new_tokens=MAX_NEW)
        texts, _, _ = page.caption()
        assert texts == sampled[0], (texts, sampled)
    print(f"browser test: {time.monotonic() - started:.1f} s in all, first caption {seconds:.1f} s on the page")


def _programs(folder: Path, *names: str) -> Path:
    """``folder`` holding empty executables of these names (for a PATH of nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.parametrize("programs, modules, expected", [
    ((), (), ["gradio", "selenium", "no chromium binary", "no chromedriver"]),
    (("chromium",), ("gradio",), ["selenium", "no chromedriver"]),
    (("chromium-browser", "chromedriver"), ("selenium",), ["gradio"]),
    (("google-chrome", "chromedriver"), ("gradio", "selenium"), []),
])
def test_every_missing_part_is_named(programs, modules, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_programs(tmp_path / "bin", *programs)))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in modules else None)
    missing = missing_parts()
    assert len(missing) == len(expected) and all(m.startswith(e) for e, m in zip(expected, missing)), missing
    assert missing_requirements() == ("; ".join(missing) or None)


def outcome_of_check() -> tuple[str, str]:
    """("run" | "skip" | "fail", message) of :func:`require_browser`, caught here so that a skip
    where a failure was expected fails this test rather than skipping it."""
    try:
        require_browser()
    except pytest.fail.Exception as exc:
        return "fail", str(exc)
    except pytest.skip.Exception as exc:
        return "skip", str(exc)
    return "run", ""


@pytest.mark.parametrize("ci, outcome", [("true", "fail"), ("TRUE", "fail"), (None, "skip"), ("false", "skip")])
def test_a_missing_part_skips_the_browser_test_but_fails_it_under_ci(ci, outcome, tmp_path, monkeypatch):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PATH", str(_programs(tmp_path / "bin", "chromium")))  # no chromedriver
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    got, message = outcome_of_check()
    assert got == outcome and "no chromedriver" in message, (got, message)
    monkeypatch.setenv("PATH", str(_programs(tmp_path / "bin", "chromedriver")))
    assert outcome_of_check() == ("run", "")  # nothing missing: the test runs, CI or not


def test_the_check_comes_before_the_training(request):
    """pytest sets up the browser test's fixtures in the order of its fixture names: ``browser_ready``
    before ``tiny_run``, so a skip (or a failure under CI) trains nothing."""
    item = next(i for i in request.node.parent.collect() if i.name == "test_the_page_in_a_browser")
    assert item.fixturenames.index("browser_ready") < item.fixturenames.index("tiny_run"), item.fixturenames


# ============================================================================ the screenshot =
def screenshot(run: Path, out: Path, clip: str | None = None) -> None:
    """The README's picture: a test clip of ``run`` captioned on the page, the screen saved."""
    from PIL import Image

    from dataloaders.records import load_records

    clips = {r["video_name"]: r for r in load_records(run / "data" / "test.pkl")}
    name = clip or next(iter(clips))
    with tempfile.TemporaryDirectory() as tmp, serve(run, Path(tmp) / "server.log") as url, \
            chromium(Path(tmp) / "profile") as driver:
        page = Page(driver, url)
        page.find("#source input[value='test clip']").click()
        page.choose("test_clip", name)
        page.caption()
        for element_id in ("animation", "node_attention", "cross_attention"):
            page.picture(element_id)
        time.sleep(1.0)
        shot = Path(tmp) / "shot.png"
        driver.save_screenshot(str(shot))
        with Image.open(shot) as image:
            image = image.convert("RGB")
            image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
            image.quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    print(f"{out}: {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="save the README's screenshot of the page")
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--clip", help="the test clip to caption (default: the first)")
    arguments = parser.parse_args()
    if missing_requirements():
        sys.exit(f"error: {missing_requirements()}")
    screenshot(arguments.run, arguments.out, arguments.clip)
