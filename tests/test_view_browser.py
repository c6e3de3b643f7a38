"""``mstudy view`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) loads the pages the real command serves.

Skipped, with the reason, where chromium, chromedriver or selenium is missing; CI installs
them and sets ``MSTUDY_REQUIRE_CHROMIUM=1``, which turns the skip into a failure. Each test
keeps a screenshot under its temporary folder (``tmp_path``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from view_helpers import FACTS, STUDY, folder_hash, make_probe, make_study, view

from mstudy.cli import main

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
_missing = [
    name
    for name, found in (
        ("the chromium package", CHROMIUM),
        ("the chromium-driver package (chromedriver)", DRIVER),
        ("selenium", importlib.util.find_spec("selenium")),
        ("starlette", importlib.util.find_spec("starlette")),
        ("uvicorn", importlib.util.find_spec("uvicorn")),
        ("matplotlib", importlib.util.find_spec("matplotlib")),
    )
    if not found
]
if _missing:
    _why = (
        f"browser tests need {', '.join(_missing)} "
        "(apt-get install chromium chromium-driver; pip install -e '.[dev]')"
    )
    if os.environ.get("MSTUDY_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError(f"MSTUDY_REQUIRE_CHROMIUM=1, but {_why}")
    pytest.skip(_why, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("study"))


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.2)


def _text(driver: Any, css: str) -> str:
    text: str = driver.find_element(By.CSS_SELECTOR, css).text
    return text


def test_study_pages(browser: Any, study: Path, tmp_path: Path) -> None:
    report = json.loads((study.parent / "out" / "report.json").read_text())
    before = folder_hash(study.parent)
    with view(str(study), "--refresh", "0") as page:
        browser.get(page.url)
        # the funnel's figures
        assert _text(browser, "#total-accepted") == str(report["accepted"])
        assert _text(browser, "#total-rejected") == str(report["rejected"])
        for name, stats in report["strategies"].items():
            row = browser.find_element(By.CSS_SELECTOR, f'#funnel tr[data-strategy="{name}"]')
            assert row.find_element(By.CSS_SELECTOR, ".accepted").text == str(stats["accepted"])
            assert row.find_element(By.CSS_SELECTOR, ".rejected").text == str(stats["rejected"])
        chart = browser.find_element(By.ID, "funnel-chart")
        _wait(lambda: browser.execute_script("return arguments[0].naturalWidth", chart) > 0)
        browser.save_screenshot(str(tmp_path / "overview.png"))

        # a row's provenance, on demand
        browser.get(page.url + "rows")
        card = browser.find_element(By.CSS_SELECTOR, ".card.row")
        provenance = card.find_element(By.CSS_SELECTOR, "details.provenance pre")
        assert not provenance.is_displayed()
        card.find_element(By.CSS_SELECTOR, "details.provenance summary").click()
        _wait(provenance.is_displayed)
        shown = json.loads(provenance.text)
        first = json.loads((study.parent / "out" / "enriched.jsonl").read_text().splitlines()[0])
        assert shown == first["provenance"]
        assert "source record" in card.text and "Olaf Brandt" in card.text
        browser.save_screenshot(str(tmp_path / "rows.png"))

        # search by text
        box = browser.find_element(By.ID, "search")
        box.send_keys("Mira Voss")
        box.submit()
        _wait(lambda: "q=Mira" in browser.current_url)
        cards = browser.find_elements(By.CSS_SELECTOR, ".card.row")
        assert cards and all("Mira Voss" in c.text for c in cards)

        # a rejection's reason and the teacher's reply
        browser.get(page.url + "rejects")
        group = browser.find_element(By.LINK_TEXT, "subject missing")
        group.click()
        _wait(lambda: "reason=subject%20missing" in browser.current_url)
        rejection = browser.find_element(By.CSS_SELECTOR, ".card.reject")
        assert rejection.find_element(By.CSS_SELECTOR, ".reason").text == "subject missing"
        assert "I cannot help with that request." in rejection.text
        browser.save_screenshot(str(tmp_path / "rejects.png"))

        # an error is a page, not a traceback
        browser.get(page.url + "no-such-page")
        assert "Error 404" in browser.page_source and "Traceback" not in browser.page_source
    assert folder_hash(study.parent) == before


def test_paging(browser: Any, study: Path, tmp_path: Path) -> None:
    rows = [
        json.loads(line)
        for line in (study.parent / "out" / "enriched.jsonl").read_text().splitlines()
    ]
    path = tmp_path / "many.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(130):
            handle.write(json.dumps({**rows[i % len(rows)], "id": f"copy-{i}"}) + "\n")
    with view(str(path), "--refresh", "0") as page:
        browser.get(page.url + "rows")
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card.row")) == 50
        browser.find_element(By.ID, "next").click()
        _wait(lambda: "at=50" in browser.current_url)
        assert browser.find_element(By.CSS_SELECTOR, ".card.row").get_attribute("id") == "row-50"
        browser.find_element(By.ID, "next").click()
        _wait(lambda: "at=100" in browser.current_url)
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card.row")) == 30
        assert not browser.find_elements(By.ID, "next")
        browser.find_element(By.ID, "previous").click()
        _wait(lambda: "at=50" in browser.current_url)
        browser.save_screenshot(str(tmp_path / "paging.png"))


def test_probe_page(browser: Any, tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "probe")
    with view(str(probe), "--refresh", "0") as page:
        browser.get(page.url)
        table = _text(browser, "#probe-table")
        assert "+ teacher reversals" in table and "forward only" in table
        chart = browser.find_element(By.ID, "probe-chart")
        _wait(lambda: browser.execute_script("return arguments[0].naturalWidth", chart) > 300)
        verdicts = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#reversals td[class]")]
        assert verdicts == ["true", "false", "undecided"]
        browser.save_screenshot(str(tmp_path / "probe.png"))


def test_live_page_refreshes_when_the_run_finishes(browser: Any, tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").write_bytes(FACTS.read_bytes())
    config = tmp_path / "study.toml"
    config.write_text(STUDY + "\n[run]\nmax_tokens = 1500\ncheckpoint_every = 0.0\n")
    assert main(["run", str(config), "-q"]) == 0  # stopped by its budget: the journal stays
    with view(str(tmp_path / "out"), "--refresh", "0.5") as page:
        browser.get(page.url)
        assert browser.find_elements(By.ID, "live")
        browser.save_screenshot(str(tmp_path / "live.png"))
        config.write_text(config.read_text().replace("max_tokens = 1500\n", ""))
        assert main(["run", str(config), "-q"]) == 0
        _wait(lambda: not browser.find_elements(By.ID, "live"))  # the page reloaded itself
        accepted = (tmp_path / "out" / "enriched.jsonl").read_bytes().count(b"\n")
        assert _text(browser, "#total-accepted") == str(accepted)
        browser.save_screenshot(str(tmp_path / "finished.png"))
