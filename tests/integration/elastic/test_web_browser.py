"""sarchive-web in a real browser (Debian's chromium, headless, driven by Selenium through
chromium-driver) on jobs a real sarchive-es indexed: search, open a job, read its script,
filter its environment, download a spool file byte for byte, compare two jobs; a hostile
job's script runs nowhere. Screenshots are kept in the test's tmp dir."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from infra.apt import apt_install
from infra.service import ServiceError
from schemas.model import JobEvent
from testkit.waiting import wait_until

WebServer = Any  # conftest's type; tests cannot import conftest


def wait_for_texts(browser: WebDriver, selector: str, expected: list[str]) -> None:
    """Until the elements selector finds read expected: a click that submits a form loads a
    new page, and elements found on the old one meanwhile go stale."""
    def texts() -> list[str]:
        try:
            return [element.text for element in browser.find_elements(By.CSS_SELECTOR,
                                                                       selector)]
        except StaleElementReferenceException:
            return []

    wait_until(lambda: texts() == expected, 15, f"{selector} reads {expected}",
               context=lambda: repr(texts()))
REPO = Path(__file__).resolve().parents[3]
BROWSER_PACKAGES = ("chromium", "chromium-driver")
# This machine has no outside network: without these chromium keeps dialling out.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1400")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless chromium with a fresh profile, downloading into tmp_path/downloads."""
    try:
        apt_install(BROWSER_PACKAGES)
    except ServiceError as exc:
        pytest.fail(f"chromium is needed: {exc}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService("/usr/bin/chromedriver"))
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def shot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def test_a_user_searches_reads_filters_downloads_and_compares_in_a_browser(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer],
        browser: WebDriver, tmp_path: Path) -> None:
    server = web_server("--dev-user", "alice")
    browser.get(server.url + "/")
    assert browser.find_element(By.ID, "viewer").text == "alice"
    browser.find_element(By.ID, "f-name").send_keys("sim")
    browser.find_element(By.ID, "search-button").click()
    # Alice's two; bob's, the spoofed and the unknown one are not hers. (The page before the
    # submit lists all her jobs: read the results once the new page has them.)
    wait_for_texts(browser, "#results a.job-link", ["webtest:7001", "webtest:7000"])
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.job-link")
    shot(browser, tmp_path, "search")

    links[0].click()
    sim1, sim2 = web_jobs["sim1"], web_jobs["sim2"]
    assert browser.find_element(By.ID, "permalink").text == sim2.job_key
    script = browser.find_element(By.ID, "script").text
    assert "srun ./sim --steps 20" in script and "echo done" in script
    assert browser.find_elements(By.CSS_SELECTOR, "#script .linenos a")[4].text == "5"
    previous = browser.find_element(By.ID, "previous-job").get_attribute("href")
    assert previous == f"{server.url}/jobs/{sim1.job_key}"
    # The later jobs named sim (bob's, the spoof claiming alice, the unknown owner's) are
    # not hers: no link leads to them.
    assert not browser.find_elements(By.ID, "next-job")
    job_page = shot(browser, tmp_path, "job")
    shutil.copyfile(job_page, tmp_path / "web-job-page.png")

    browser.find_element(By.ID, "env-filter").send_keys("home")
    browser.find_element(By.ID, "env-button").click()
    wait_for_texts(browser, "#environment tbody tr", ["HOME /home/alice"])
    shot(browser, tmp_path, "environment-filtered")

    browser.find_element(By.LINK_TEXT, "script").click()
    downloaded = tmp_path / "downloads" / "webtest-7001-script"
    wait_until(downloaded.exists, 30, "the script is downloaded")
    assert downloaded.read_bytes() == sim2.spool_files[0].content

    browser.find_element(By.ID, "diff-with").send_keys(sim1.job_key)
    browser.find_element(By.ID, "diff-button").click()
    wait_for_texts(browser, "#diff tr.replace", [
        "3 module load gcc/12 3 module load gcc/9",
        "4 srun ./sim --steps 20 4 srun ./sim --steps 10"])
    assert [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#diff tr.delete")] == [
        "5 echo done"]
    shot(browser, tmp_path, "diff")


def test_no_script_of_a_hostile_job_runs_in_the_page(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer],
        browser: WebDriver, tmp_path: Path) -> None:
    server = web_server("--dev-user", "alice")
    hostile = web_jobs["hostile"]
    for path in (f"/jobs/{quote(hostile.job_key, safe='')}",
                 f"/?name={quote('say*')}",
                 f"/diff?a={quote(hostile.job_key)}&b={quote(web_jobs['sim1'].job_key)}"):
        browser.get(server.url + path)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 -- the property access is the check
        assert browser.execute_script("return window.pwned === undefined") is True
    browser.get(server.url + f"/jobs/{quote(hostile.job_key, safe='')}")
    assert "echo '</script><script>alert(1)</script>'" in browser.find_element(
        By.ID, "script").text
    assert browser.find_element(By.CSS_SELECTOR, "#job-title .name").text == (
        "say \"hi\" & <b>'bye'</b>")
    values = {row.find_element(By.CSS_SELECTOR, ".key").text:
              row.find_element(By.CSS_SELECTOR, ".value").text
              for row in browser.find_elements(By.CSS_SELECTOR, "#environment tbody tr")}
    assert values["HTML"] == "<img src=x onerror=alert(2)>"
    assert values["SECRET_TOKEN"] == "redacted"
    shot(browser, tmp_path, "hostile")
