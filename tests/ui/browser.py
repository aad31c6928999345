"""Headless Chromium through Debian's chromedriver: opening a page at a given size, and
measuring what a person would see. The measuring uses JavaScript in the driver; the pages
themselves have none."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outside_tools import INSTALL_HINTS, require_tool


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int
    # A phone: the page's <meta name=viewport> applies, as on a real one.
    mobile: bool
    scale: float


PHONE = Viewport("phone", 390, 844, mobile=True, scale=2)
DESKTOP = Viewport("desktop", 1280, 800, mobile=False, scale=1)
VIEWPORTS = [PHONE, DESKTOP]


def chrome(log_path: Path) -> Any:
    """A headless Chromium session. chromedriver's path is given, so Selenium Manager (which
    would download a driver) never runs."""
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed; {INSTALL_HINTS['selenium']}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,800"]:
        options.add_argument(arg)
    if os.geteuid() == 0:
        # Chromium refuses to start as root (as in CI containers) with its sandbox on.
        options.add_argument("--no-sandbox")
    # The console, for Content-Security-Policy violations.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=chromedriver, log_output=str(log_path))
    return webdriver.Chrome(service=service, options=options)


def open_page(driver: Any, url: str, viewport: Viewport) -> None:
    """Load `url` as a device of the viewport's size would, and drop older console lines."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": viewport.width, "height": viewport.height,
        "deviceScaleFactor": viewport.scale, "mobile": viewport.mobile,
    })
    driver.get_log("browser")
    driver.get(url)


def screenshot(driver: Any, path: Path) -> None:
    """What is on screen, at the emulated size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path)), f"no screenshot saved to {path}"


_MEASURE = """
const viewport = {width: window.innerWidth, height: window.innerHeight};
const describe = (el) => {
  let text = el.tagName.toLowerCase();
  if (el.id) text += '#' + el.id;
  if (typeof el.className === 'string' && el.className) text += '.' + el.className.trim().split(/\\s+/).join('.');
  return text;
};
const box = (el) => {
  const r = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  return {
    what: describe(el), text: el.textContent.trim(),
    left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height,
    shown: style.display !== 'none' && style.visibility === 'visible' && Number(style.opacity) > 0,
    // Not covered by something else at its centre.
    on_top: hit !== null && (hit === el || el.contains(hit)),
  };
};
const overflowing = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  if (r.right > viewport.width + 0.5 || r.left < -0.5) {
    overflowing.push(describe(el) + ' spans ' + r.left.toFixed(1) + '..' + r.right.toFixed(1));
  }
}
const one = (selector) => { const el = document.querySelector(selector); return el && box(el); };
return {
  viewport: viewport,
  scroll_width: document.documentElement.scrollWidth,
  overflowing: overflowing,
  title: document.title,
  h1: [...document.querySelectorAll('h1')].map((el) => el.textContent.trim()),
  items: [...document.querySelectorAll('li')].map(box),
  brand: one('header a[href="/"]'),
  nav_links: [...document.querySelectorAll('nav a')].map((el) => ({
    ...box(el), current: el.getAttribute('aria-current'),
  })),
  nav_lists: document.querySelectorAll('nav ul, nav ol, nav li').length,
  notice: one('[role=status]'),
  trace: (() => {
    const code = document.querySelector('footer code');
    if (!code) return null;
    const link = code.closest('a');
    return {...box(code), href: link && link.getAttribute('href')};
  })(),
  resources: performance.getEntriesByType('resource').map((entry) => entry.name),
  scripts: document.scripts.length,
};
"""


def measure(driver: Any) -> dict[str, Any]:
    """Layout facts of the loaded page, in CSS pixels."""
    return driver.execute_script(_MEASURE)


def csp_violations(driver: Any) -> list[str]:
    """Console lines since the page was opened that report a blocked load or style."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Content-Security-Policy" in entry["message"]]
