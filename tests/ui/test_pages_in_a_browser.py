"""The marketplace's pages as a person sees them: real binaries, headless Chromium at phone and
desktop sizes, a screenshot of each, and checks that what matters is on screen and that nothing
sticks out sideways."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import browser
from bookshop import Bookshop
from browser import PHONE, VIEWPORTS, Viewport
from loopback import http_get

CATEGORIES = [
    ("mystery", "Mystery"),
    ("science_fiction", "Science fiction"),
    ("self_help", "Self-help"),
]
TITLE = "Online Books For You"

# Titles a layout must survive: long, one unbroken word, and markup that must show as text.
AWKWARD_TITLES = [
    "The Extraordinarily Long and Winding Account of a Detective Who Investigated Every Single "
    "Room of a Very Large Country House, Twice",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2,
    "<b>Tom & Jerry</b> \"Quoted\" Mysteries",
]


@pytest.fixture(scope="session")
def awkward_shop(bin_dir: Path, logs_dir: Path, jaeger_ui: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shop over a catalog whose only mystery books have AWKWARD_TITLES."""
    books = [{"id": number, "category": "mystery", "title": title}
             for number, title in enumerate(AWKWARD_TITLES, start=1)]
    catalog = tmp_path_factory.mktemp("catalog") / "catalog.json"
    catalog.write_text(json.dumps(books))
    with Bookshop(bin_dir, logs_dir, label="awkward", catalog_path=catalog, jaeger_ui_url=jaeger_ui) as running:
        yield running.url


def look(driver: Any, url: str, viewport: Viewport, screenshot: Path) -> dict[str, Any]:
    """Open the page, save what is on screen, and check what every page must: the shop's
    title and header, no horizontal overflow, nothing loaded from anywhere, no script, and
    the navigation as plain links (the page's only list items are the books)."""
    browser.open_page(driver, url, viewport)
    browser.screenshot(driver, screenshot)
    page = browser.measure(driver)
    where = f"{url} at {viewport.name} width (screenshot: {screenshot})"

    assert page["title"] == TITLE, where
    assert page["viewport"] == {"width": viewport.width, "height": viewport.height}, where
    assert page["scroll_width"] <= viewport.width, f"{where}: the page scrolls sideways to {page['scroll_width']} px"
    assert page["overflowing"] == [], f"{where}: past the viewport's edge: {page['overflowing']}"

    brand = page["brand"]
    assert brand and TITLE in brand["text"] and brand["shown"], f"{where}: no shop name in the header: {brand}"
    assert_on_screen(brand, viewport, where)
    assert [link["text"] for link in page["nav_links"]] == [label for _, label in CATEGORIES], where
    for link in page["nav_links"]:
        assert_on_screen(link, viewport, where)
    assert page["nav_lists"] == 0, f"{where}: the navigation must not be a list"

    assert page["resources"] == [], f"{where}: loaded from elsewhere: {page['resources']}"
    assert page["scripts"] == 0, f"{where}: the page should need no JavaScript"
    violations = browser.csp_violations(driver)
    assert violations == [], f"{where}: the Content-Security-Policy blocked something: {violations}"
    return page


def look_at_error_page(driver: Any, url: str, status: int, heading: str, viewport: Viewport,
                       screenshot: Path) -> None:
    """An error answer (`status`) that is still a page in the shop's look, headed `heading`,
    with no books."""
    assert http_get(url).status == status
    page = look(driver, url, viewport, screenshot)

    assert page["h1"] == [heading]
    assert page["items"] == []


def assert_on_screen(box: dict[str, Any], viewport: Viewport, where: str) -> None:
    """Wholly inside the first screen, of non-zero size, visible and not covered."""
    what = f"{where}: {box['what']} {box['text']!r}"
    assert box["width"] > 0 and box["height"] > 0, f"{what} has no size: {box}"
    assert box["shown"], f"{what} is hidden"
    assert box["left"] >= 0 and box["right"] <= viewport.width, f"{what} is off screen sideways: {box}"
    assert box["top"] >= 0 and box["bottom"] <= viewport.height, f"{what} is below the first screen: {box}"
    assert box["on_top"], f"{what} is covered by something else"


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda viewport: viewport.name)
@pytest.mark.parametrize(("slug", "label"), CATEGORIES, ids=[slug for slug, _ in CATEGORIES])
def test_a_category_page_shows_its_three_books_on_the_first_screen(
        driver: Any, shop: str, screenshots: Path, viewport: Viewport, slug: str, label: str) -> None:
    url = f"{shop}/?category={slug}"
    assert http_get(url).status == 200
    page = look(driver, url, viewport, screenshots / f"{slug}-{viewport.name}.png")

    assert page["h1"] == [f"{label} books you may like"]
    assert len(page["items"]) == 3, page["items"]
    for book in page["items"]:
        assert book["text"], f"a book without a title: {book}"
        assert_on_screen(book, viewport, f"{url} at {viewport.name} width")


@pytest.mark.parametrize(("slug", "label"), CATEGORIES, ids=[slug for slug, _ in CATEGORIES])
def test_the_navigation_marks_the_category_shown(
        driver: Any, shop: str, screenshots: Path, slug: str, label: str) -> None:
    page = look(driver, f"{shop}/?category={slug}", PHONE, screenshots / f"{slug}-phone.png")

    current = [link["text"] for link in page["nav_links"] if link["current"] == "page"]
    assert current == [label], "exactly the category shown carries aria-current=page"


def test_the_home_page_is_the_mystery_shelf(driver: Any, shop: str, screenshots: Path) -> None:
    page = look(driver, f"{shop}/", PHONE, screenshots / f"home-{PHONE.name}.png")

    assert page["h1"] == ["Mystery books you may like"]
    assert len(page["items"]) == 3


def test_the_footer_links_the_page_trace_to_jaeger(driver: Any, shop: str, jaeger_ui: str, screenshots: Path) -> None:
    page = look(driver, f"{shop}/?category=mystery", PHONE, screenshots / f"mystery-{PHONE.name}.png")

    trace = page["trace"]
    assert trace, "tracing is on, so the footer names the trace"
    assert re.fullmatch(r"[0-9a-f]{32}", trace["text"]), trace
    assert trace["href"] == f"{jaeger_ui}/trace/{trace['text']}", trace


def test_without_a_jaeger_address_the_footer_names_the_trace_without_a_link(
        driver: Any, degraded_shop: str, screenshots: Path) -> None:
    page = look(driver, f"{degraded_shop}/", PHONE, screenshots / f"degraded-home-{PHONE.name}.png")

    trace = page["trace"]
    assert trace and re.fullmatch(r"[0-9a-f]{32}", trace["text"]), trace
    assert trace["href"] is None, trace


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda viewport: viewport.name)
def test_without_recommendations_the_page_shows_a_notice_on_the_first_screen(
        driver: Any, degraded_shop: str, screenshots: Path, viewport: Viewport) -> None:
    url = f"{degraded_shop}/?category=self_help"
    status, _, html = http_get(url)
    assert status == 200
    assert "recommendations are unavailable" in html
    page = look(driver, url, viewport, screenshots / f"degraded-{viewport.name}.png")

    assert page["h1"] == ["Self-help books you may like"]
    assert page["items"] == []
    notice = page["notice"]
    assert notice and "recommendations are unavailable" in notice["text"], notice
    assert_on_screen(notice, viewport, f"{url} at {viewport.name} width")


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda viewport: viewport.name)
def test_an_unknown_path_gets_a_not_found_page_in_the_shop_look(
        driver: Any, shop: str, screenshots: Path, viewport: Viewport) -> None:
    look_at_error_page(driver, f"{shop}/books/42", 404, "Page not found", viewport,
                       screenshots / f"not-found-{viewport.name}.png")


def test_an_unknown_category_gets_a_bad_request_page_in_the_shop_look(
        driver: Any, shop: str, screenshots: Path) -> None:
    look_at_error_page(driver, f"{shop}/?category=poetry", 400, "Unknown category", PHONE,
                       screenshots / f"bad-category-{PHONE.name}.png")


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda viewport: viewport.name)
def test_long_and_odd_titles_wrap_inside_their_cards(
        driver: Any, awkward_shop: str, screenshots: Path, viewport: Viewport) -> None:
    url = f"{awkward_shop}/?category=mystery"
    page = look(driver, url, viewport, screenshots / f"awkward-titles-{viewport.name}.png")

    assert sorted(book["text"] for book in page["items"]) == sorted(AWKWARD_TITLES)
    for book in page["items"]:
        assert book["width"] > 0 and book["height"] > 0 and book["shown"], book
        assert 0 <= book["left"] and book["right"] <= viewport.width, f"{book['text']!r} sticks out: {book}"
