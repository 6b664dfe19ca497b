"""The labelling page end to end in a real headless browser: Debian's chromium driven by Selenium (through Debian's
chromedriver; nothing is downloaded). Keys label the pair on screen, each answer is on disk when the next pair
shows, progress is shown, and a restarted server (a new process's view of the queue) resumes where labelling
stopped, with new pairs appended by a training run."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("selenium", reason="selenium not installed (pip install 'pixelrl[dev]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from pixelrl.rewards.queue import LABELS_FILE, LabelQueue  # noqa: E402
from pixelrl.web.label_server import LabelServer  # noqa: E402

CHROMIUM = os.environ.get("PIXELRL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PIXELRL_CHROMEDRIVER", "/usr/bin/chromedriver")


def _which(path: str) -> str | None:
    return path if Path(path).is_file() else shutil.which(Path(path).name)


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = _which(CHROMIUM), _which(CHROMEDRIVER)
    if binary is None or driver_path is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them with "
                    "the pixelrl[dev] test tools: apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,800"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def frames(n: int, seed: int) -> np.ndarray:
    """n different uint8 [n, 2, 3, 48, 48] two-step clips."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 2, 3, 48, 48), dtype=np.uint8)


def _pair_on_screen(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-pair") or ""


def _wait_for(driver, cond, what: str, timeout: float = 15):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d), message=what)


def _clips_loaded(driver) -> bool:
    return driver.execute_script(
        "const l = document.getElementById('left'), r = document.getElementById('right');"
        "return l.complete && r.complete && l.naturalWidth > 0 && r.naturalWidth > 0;")


def _lines(queue: Path) -> list[dict]:
    return [json.loads(x) for x in (queue / LABELS_FILE).read_text().splitlines()]


def test_labelling_in_a_browser_is_saved_as_given_and_resumes_after_a_restart(browser, tmp_path):
    q = LabelQueue.create(tmp_path / "queue", segment=2, fps=5, goal="to balance the pole upright")
    ids = q.add_batch(frames(4, 0), frames(4, 1), batch=0)
    assert ids == [0, 1, 2, 3]
    server = LabelServer(tmp_path / "queue", port=0).start()
    try:
        browser.get(server.url)
        _wait_for(browser, lambda d: _pair_on_screen(d) == "0", "the first pair is shown")
        _wait_for(browser, _clips_loaded, "both clips load as images")
        text = browser.find_element(By.ID, "progress-text").text
        assert text.startswith("0 / 4 labelled"), text
        assert "to balance the pole upright" in browser.find_element(By.ID, "goal").text
        assert browser.find_element(By.ID, "left").get_attribute("src").endswith("/clips/000000_a.gif")
        body = browser.find_element(By.TAG_NAME, "body")
        for pair, key, label in ((0, Keys.ARROW_LEFT, 0), (1, Keys.ARROW_RIGHT, 1), (2, Keys.ARROW_DOWN, -1)):
            body.send_keys(key)
            _wait_for(browser, lambda d: _pair_on_screen(d) == str(pair + 1), f"pair {pair + 1} follows")
            # the answer is on disk by the time the next pair is on screen
            assert _lines(tmp_path / "queue")[-1]["pair"] == pair
            assert _lines(tmp_path / "queue")[-1]["label"] == label
        assert browser.find_element(By.ID, "progress-text").text.startswith("3 / 4 labelled")
    finally:
        server.close()  # the labeller stops (a crash or Ctrl-C): 3 answers are on disk, pair 3 is not answered

    assert [(r["pair"], r["key"]) for r in _lines(tmp_path / "queue")] == [(0, "left"), (1, "right"), (2, "equal")]
    LabelQueue(tmp_path / "queue").add_batch(frames(2, 2), frames(2, 3), batch=1)  # a training run adds pairs

    server = LabelServer(tmp_path / "queue", port=0).start()  # a restart resumes at the first unanswered pair
    try:
        browser.get(server.url)
        _wait_for(browser, lambda d: _pair_on_screen(d) == "3", "the restarted page resumes at pair 3")
        assert browser.find_element(By.ID, "progress-text").text.startswith("3 / 6 labelled")
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.SPACE)  # skip
        _wait_for(browser, lambda d: _pair_on_screen(d) == "4", "pair 4 follows the skip")
        _wait_for(browser, _clips_loaded, "the new batch's clips load")
        browser.find_element(By.ID, "btn-right").click()
        _wait_for(browser, lambda d: _pair_on_screen(d) == "5", "pair 5 follows the click")
        browser.find_element(By.ID, "btn-left").click()
        _wait_for(browser, lambda d: d.find_element(By.ID, "done").is_displayed(), "the page says all are done")
        assert browser.find_element(By.ID, "progress-text").text.startswith("6 / 6 labelled")
        # an answer sent again for a labelled pair (a reloaded page) is refused, not written twice
        req = urllib.request.Request(server.url + "api/label", data=json.dumps({"pair": 4, "key": "left"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["duplicate"] is True
    finally:
        server.close()
    lines = _lines(tmp_path / "queue")
    assert [(r["pair"], r["label"]) for r in lines] == [(0, 0), (1, 1), (2, -1), (3, -2), (4, 1), (5, 0)]
    assert LabelQueue(tmp_path / "queue").labels() == {0: 0, 1: 1, 2: -1, 3: -2, 4: 1, 5: 0}
    assert all(isinstance(r["ms"], int) for r in lines)  # time to answer, recorded with each label
