"""The docs site builds strictly offline, loads nothing from the internet, and renders its results.

The browser test opens the built site in headless Chromium from a local HTTP server and leaves a
screenshot in ``artifacts/``.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ai_system.bench.harness import REPO_ROOT

EXTERNAL_ASSET = re.compile(r"""<(?:script|link|img)\b[^>]*(?:src|href)=["'](?:https?:)?//""", re.IGNORECASE)
ARTIFACTS = REPO_ROOT / "artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A strict build of a copy of the docs, with results pages generated from ``results/``.

    The systems pages link to their area's results page, so the published results must cover
    every area: a checkout without them is incomplete, and this says so.
    """
    published = REPO_ROOT / "results"
    assert any(published.glob("*/*.json")), f"{published} holds no results files: run `make bench`"
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO_ROOT / "docs", work / "docs", ignore=shutil.ignore_patterns("results"))
    shutil.copy(REPO_ROOT / "mkdocs.yml", work / "mkdocs.yml")
    subprocess.run([sys.executable, "-m", "ai_system.cli", "report", "--results", str(published),
                    "--out", str(work / "docs" / "results")], check=True, capture_output=True, timeout=300)
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(work / "mkdocs.yml"),
                            "-d", str(work / "site")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    return work / "site"


def test_every_page_loads_scripts_styles_and_images_locally(site):
    pages = list(site.rglob("*.html"))
    assert pages
    offenders = {str(page.relative_to(site)): EXTERNAL_ASSET.findall(page.read_text()) for page in pages}
    assert {page: found for page, found in offenders.items() if found} == {}
    assert (site / "assets" / "vendor" / "mermaid" / "mermaid.min.js").exists()


def test_results_pages_are_built(site):
    overview = (site / "results" / "index.html").read_text()
    assert "performance table" in overview and "At a glance" in overview
    home = (site / "index.html").read_text()
    assert "results-summary" not in home and "aisys-status" in home
    assert not (site / "results" / "home-summary" / "index.html").exists()
    assert (site / "results" / "history" / "index.html").exists()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("headless Chromium needs Debian's chromium and chromium-driver: run `make system-deps` as root")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# Material renders each diagram into a closed shadow root: a drawn diagram shows as a sized box.
MERMAID_RENDERED = ("return Array.from(document.querySelectorAll('div.mermaid'))"
                    ".filter(el => el.getBoundingClientRect().height > 30).length")
ALL_IMAGES_LOADED = "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
OWN_ORIGIN_ONLY = ("return performance.getEntriesByType('resource').map(e => e.name)"
                   ".filter(n => !n.startsWith(location.origin))")


STATUSES = {"aisys-met", "aisys-not-met", "aisys-no-goal", "aisys-not-measured"}
# The state of every status cell in the first table of the page (the headline): its class names.
HEADLINE_STATES = ("const table = document.querySelector('article table');"
                   "if (!table) return null;"
                   "return Array.from(table.querySelectorAll('tbody tr')).map(row => {"
                   "  const badge = row.querySelector('.aisys-status');"
                   "  return badge ? Array.from(badge.classList).filter(c => c !== 'aisys-status')[0] : 'missing'; })")
HEADLINE_HEADER = "return Array.from(document.querySelectorAll('article table')[0].querySelectorAll('th'))" \
                  ".map(th => th.textContent.trim())"


@pytest.mark.browser
def test_home_and_overview_show_goals_met_per_system(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(f"{served}/")
    assert set(browser.execute_script(HEADLINE_STATES)) <= STATUSES
    assert browser.find_element(By.CSS_SELECTOR, "article table").is_displayed()
    browser.get(f"{served}/results/")
    tables = browser.find_elements(By.CSS_SELECTOR, "article table")
    assert any("Training Throughput" in table.text and "Inference Latency" in table.text for table in tables)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "results-overview.png"))


@pytest.mark.browser
def test_every_results_page_opens_with_its_headline_and_loads_every_plot_locally(browser, served, site):
    from selenium.webdriver.support.ui import WebDriverWait

    pages = sorted(path.parent.name for path in (site / "results").glob("*/index.html"))
    areas = [page for page in pages if page not in ("history", "compare")]
    assert areas, "no system results pages were built"
    for page in pages:
        browser.get(f"{served}/results/{page}/")
        WebDriverWait(browser, 30).until(lambda driver: driver.execute_script(ALL_IMAGES_LOADED))
        assert browser.execute_script(OWN_ORIGIN_ONLY) == []
        if page in areas and "declares a question" not in browser.page_source:
            assert browser.execute_script(HEADLINE_HEADER)[:2] == ["Question", "Ours"], page
            states = browser.execute_script(HEADLINE_STATES)
            assert states and set(states) <= STATUSES, (page, states)
    browser.save_screenshot(str(ARTIFACTS / f"results-{pages[-1]}.png"))


@pytest.mark.browser
def test_mermaid_diagrams_render_from_the_local_script(browser, served):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{served}/architecture/")
    WebDriverWait(browser, 30).until(lambda driver: driver.execute_script(MERMAID_RENDERED) >= 2)
    assert browser.execute_script(OWN_ORIGIN_ONLY) == []
    browser.save_screenshot(str(ARTIFACTS / "architecture.png"))
