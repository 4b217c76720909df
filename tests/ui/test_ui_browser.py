"""End to end in headless Chromium: what a person does in the web UI, against `facegrid up`.

Photos come from shared/data/faces; every step goes through the pages (buttons, forms, file
pickers), and each page is photographed at desktop and phone widths into tests/ui/artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from .conftest import PHONE, Ui, log_in

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
EXAMPLES = FACES / "face_recognition" / "examples"
TV = FACES / "face-api.js" / "examples" / "images"
ENROL = [
    EXAMPLES / "obama.jpg",
    EXAMPLES / "biden.jpg",
    EXAMPLES / "alex-lacamoire.png",
    EXAMPLES / "lin-manuel-miranda.png",
    TV / "amy" / "amy1.png",
    TV / "penny" / "penny1.png",
    TV / "sheldon" / "sheldon1.png",
    # No face: its row says why.
    FACES / "no-faces" / "skimage" / "coffee.png",
]
GALLERY = "ui_people"


def shoot(page: Page, artifacts: Path, name: str) -> None:
    """A full-page screenshot once every image on the page has loaded."""
    page.evaluate(
        """() => Promise.all([...document.images].map((img) => {
            img.loading = "eager";
            return img.complete ? null : new Promise((done) => {
                img.addEventListener("load", done); img.addEventListener("error", done);
            });
        }))"""
    )
    page.screenshot(path=artifacts / f"{name}.png", full_page=True)


def test_gateway_serves_the_ui_with_a_strict_policy(ui_stack: Ui) -> None:
    with httpx.Client(base_url=ui_stack.url) as client:
        home = client.get("/")
        assert home.status_code == 307
        assert home.headers["location"] == "/ui/"
        page = client.get("/ui/")
        assert page.status_code == 200
        assert "<title>FaceGrid</title>" in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self'" in policy
        assert (
            client.get("/ui/views/faces.js").headers["content-type"].startswith("text/javascript")
        )


def test_log_in_with_the_keyboard_and_log_out(page: Page, ui_stack: Ui, artifacts: Path) -> None:
    page.goto("/")
    token = page.get_by_label("API token")
    expect(token).to_be_focused()
    expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    token.fill("not-a-token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("not valid")
    shoot(page, artifacts, "login-desktop")
    token.fill(ui_stack.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Galleries")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('facegrid.token')") == ui_stack.token
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('facegrid.token')") is None
    expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()


def test_gallery_upload_identify_and_delete(page: Page, ui_stack: Ui, artifacts: Path) -> None:
    log_in(page, ui_stack.token)

    page.get_by_label("New gallery").fill(GALLERY)
    page.get_by_role("button", name="Create").click()
    row = page.get_by_role("listitem").filter(has_text=GALLERY)
    expect(row).to_contain_text("0 faces")

    row.get_by_role("link", name="Upload").click()
    expect(page.get_by_label("Gallery")).to_have_value(GALLERY)
    page.get_by_label("Photos").set_input_files([str(p) for p in ENROL])
    page.get_by_label("Meta prefix").fill("ui-")
    page.get_by_role("button", name="Upload", exact=True).click()
    summary = page.get_by_text(re.compile(r"\d+ of 8 files done"))
    expect(summary).to_have_text("8 of 8 files done, 7 faces added, 1 failed.", timeout=120_000)
    expect(page.get_by_label("Upload progress")).to_have_attribute("value", "8")
    results = page.get_by_role("list", name="Results per file")
    expect(results.locator("li.ok")).to_have_count(7)
    expect(results.locator("li.failed")).to_contain_text("coffee.png")
    expect(results.locator("li.ok").filter(has_text="obama.jpg")).to_contain_text("ui-obama")
    shoot(page, artifacts, "upload-desktop")

    page.get_by_role("link", name="Galleries").click()
    expect(page.get_by_role("listitem").filter(has_text=GALLERY)).to_contain_text("7 faces")
    shoot(page, artifacts, "galleries-desktop")
    page.get_by_role("link", name=GALLERY).click()
    tiles = page.get_by_role("list", name="Faces").get_by_role("link")
    expect(tiles).to_have_count(7)
    shoot(page, artifacts, "gallery-desktop")

    # Identify another photo of Obama within the gallery: he is the best match.
    page.get_by_role("link", name="Identify").click()
    page.get_by_label("Photo", exact=True).set_input_files(
        str(EXAMPLES / "knn_examples" / "test" / "obama1.jpg")
    )
    page.get_by_label("Gallery").select_option(GALLERY)
    page.get_by_role("button", name="Identify").click()
    matches = page.locator(".matches").first.get_by_role("listitem")
    expect(matches.first.locator(".meta")).to_have_text("ui-obama", timeout=60_000)
    expect(matches.first).to_contain_text("%")
    shoot(page, artifacts, "identify-desktop")

    # Open Biden's face, change its meta, then delete it.
    page.get_by_role("link", name="Galleries").click()
    page.get_by_role("link", name=GALLERY).click()
    page.get_by_role("link", name=re.compile(r"ui-biden$")).click()
    expect(page.get_by_role("heading", name="ui-biden")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("male")
    page.get_by_label("Meta").fill("ui-joe-biden")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="ui-joe-biden")).to_be_visible()
    shoot(page, artifacts, "face-desktop")
    page.get_by_role("button", name="Delete face").click()
    expect(page.get_by_role("status")).to_contain_text("deleted")
    expect(page.get_by_role("list", name="Faces").get_by_role("link")).to_have_count(6)
    expect(page.get_by_role("link", name=re.compile("biden"))).to_have_count(0)


def test_verify_and_detect(page: Page, ui_stack: Ui, artifacts: Path) -> None:
    log_in(page, ui_stack.token)
    page.get_by_role("link", name="Verify").click()
    page.get_by_label("First photo").set_input_files(str(EXAMPLES / "obama.jpg"))
    page.get_by_label("Second photo").set_input_files(str(EXAMPLES / "obama2.jpg"))
    page.get_by_role("button", name="Verify").click()
    verdict = page.locator(".verdict")
    expect(verdict).to_have_attribute("data-verified", "true", timeout=60_000)
    expect(verdict).to_contain_text("Same person")
    shoot(page, artifacts, "verify-desktop")
    page.get_by_label("Second photo").set_input_files(str(EXAMPLES / "biden.jpg"))
    page.get_by_role("button", name="Verify").click()
    expect(verdict).to_have_attribute("data-verified", "false", timeout=60_000)

    page.get_by_role("link", name="Detect").click()
    # The Detect view replaces Verify's, whose "First photo" and "Second photo" fields a plain
    # "Photo" label would also match while the switch is under way.
    expect(page.get_by_role("button", name="Detect faces")).to_be_visible()
    page.get_by_label("Photo", exact=True).set_input_files(str(TV / "bbt1.jpg"))
    page.get_by_role("button", name="Detect faces").click()
    heading = page.get_by_role("heading", name=re.compile(r"\d+ faces found"))
    expect(heading).to_be_visible(timeout=60_000)
    found = int(heading.inner_text().split()[0])
    assert found >= 2
    expect(page.locator(".photo .box")).to_have_count(found)
    expect(page.get_by_role("region", name="Detected faces").locator("li").first).to_contain_text(
        re.compile(r"(male|female), age \d+")
    )
    shoot(page, artifacts, "detect-desktop")


def test_cameras_and_persons(page: Page, ui_stack: Ui, artifacts: Path) -> None:
    log_in(page, ui_stack.token)
    page.get_by_role("link", name="Cameras").click()
    page.get_by_label("Stream URL").fill("rtsp://10.0.0.5/door")
    page.get_by_label("Name (meta)").fill("Front door")
    page.get_by_role("button", name="Add camera").click()
    row = page.get_by_role("row").filter(has_text="Front door")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("no report yet")  # no video worker has reported on it
    camera_id = row.locator("code").inner_text()

    # Edit: the form takes the camera's values and saves them with a PUT.
    row.get_by_role("button", name="Edit camera Front door").click()
    expect(page.get_by_label("Stream URL")).to_have_value("rtsp://10.0.0.5/door")
    page.get_by_label("Stream URL").fill("rtsp://10.0.0.6/door")
    page.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("rtsp://10.0.0.6/door")
    expect(page.get_by_role("button", name="Add camera")).to_be_visible()

    # A face posted from the camera (as a video worker would) appears in the live feed.
    expect(page.get_by_text("live", exact=True)).to_be_visible()
    with httpx.Client(
        base_url=f"{ui_stack.url}/v1", headers={"Authorization": f"Token {ui_stack.token}"}
    ) as api:
        api.post(
            "/face",
            files={"photo": (EXAMPLES / "biden.jpg").read_bytes()},
            data={"meta": "ui-visitor", "cam_id": camera_id},
            timeout=60,
        ).raise_for_status()
    feed = page.get_by_role("list", name="Live faces")
    expect(feed.get_by_role("listitem")).to_have_count(1, timeout=30_000)
    expect(feed).to_contain_text("ui-visitor")
    row.get_by_role("button", name="Turn off camera Front door").click()
    expect(page.get_by_role("row").filter(has_text="Front door").locator(".badge")).to_have_text(
        "off"
    )
    expect(feed).to_contain_text("ui-visitor")  # the feed outlives changes to the list
    shoot(page, artifacts, "cameras-desktop")
    page.get_by_role("button", name="Delete camera Front door").click()
    expect(page.get_by_role("row").filter(has_text="Front door")).to_have_count(0)

    # The visitor became a person with one camera event in their history.
    page.get_by_role("link", name="Persons").click()
    page.get_by_label("Filter by name or id").fill("visitor")
    page.get_by_role("link", name=re.compile("ui-visitor")).click()
    expect(page.get_by_role("heading", name="History (1)")).to_be_visible()
    expect(page.get_by_role("row").nth(1)).to_contain_text(camera_id)
    shoot(page, artifacts, "person-desktop")


def test_phone_width(phone: Page, ui_stack: Ui, artifacts: Path) -> None:
    with httpx.Client(
        base_url=f"{ui_stack.url}/v1", headers={"Authorization": f"Token {ui_stack.token}"}
    ) as api:
        api.post("/galleries/ui_phone").raise_for_status()
        for photo in ENROL[:4]:
            api.post(
                "/face",
                files={"photo": photo.read_bytes()},
                data={"meta": f"ui-{photo.stem}", "galleries": "ui_phone"},
                timeout=60,
            ).raise_for_status()
    log_in(phone, ui_stack.token)
    shoot(phone, artifacts, "galleries-phone")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page scrolls sideways on a phone"
    phone.get_by_role("link", name="Upload").first.click()
    shoot(phone, artifacts, "upload-phone")
    phone.goto("/ui/#/gallery/ui_phone")
    phone.get_by_role("heading", name="Gallery ui_phone").wait_for()
    shoot(phone, artifacts, "gallery-phone")
    phone.get_by_role("link", name="Identify").click()
    phone.get_by_label("Photo", exact=True).set_input_files(str(EXAMPLES / "obama2.jpg"))
    phone.get_by_label("Gallery").select_option("ui_phone")
    phone.get_by_role("button", name="Identify").click()
    expect(phone.locator(".matches .meta").first).to_have_text("ui-obama", timeout=60_000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(phone, artifacts, "identify-phone")
