"""The web UI in a real browser: Debian's chromium, driven by Playwright, against `facegrid up`.

Chromium comes from apt (.ci/run), never from `playwright install`: nothing is downloaded at
test time. Screenshots go to tests/ui/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from stack.conftest import RunningStack, stack_with_models

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@dataclass
class Ui:
    """The running stack as the browser sees it."""

    url: str
    token: str


@pytest.fixture(scope="package")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, model_bundle: Path) -> Iterator[Ui]:
    # Persons on, so camera faces make persons with a history (the Persons pages).
    with stack_with_models(
        tmp_path_factory.mktemp("ui"),
        model_bundle,
        {"FACEGRID_GATEWAY_PERSON_IDENTIFY": "true"},
    ) as (running, _):
        yield _ui(running)


def _ui(running: RunningStack) -> Ui:
    assert running.api and running.token, running.output
    return Ui(url=running.api, token=running.token)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; see .ci/run)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def _page(browser: Browser, ui: Ui, viewport: dict[str, int]) -> Iterator[Page]:
    """A fresh browser context's page, checked afterwards to have asked nothing of any server
    but the gateway (no CDN, no fonts, no analytics); confirm() dialogs are accepted."""
    requested: list[str] = []
    context = browser.new_context(viewport=viewport, base_url=ui.url, color_scheme="light")
    context.set_default_timeout(30_000)
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield page
    finally:
        context.close()
    assert requested, "the page loaded nothing"
    outside = [u for u in requested if not u.startswith((f"{ui.url}/", "blob:", "data:"))]
    assert outside == [], "requests to other servers"


@pytest.fixture
def page(browser: Browser, ui_stack: Ui) -> Iterator[Page]:
    with _page(browser, ui_stack, DESKTOP) as page:
        yield page


@pytest.fixture
def phone(browser: Browser, ui_stack: Ui) -> Iterator[Page]:
    with _page(browser, ui_stack, PHONE) as page:
        yield page


def log_in(page: Page, token: str) -> None:
    page.goto("/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Galleries").wait_for()
