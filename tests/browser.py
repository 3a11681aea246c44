"""Render a local HTML file in Debian's headless Chromium (through Playwright) and report what broke."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"{CHROMIUM} missing: apt-get install -y chromium")


@dataclass
class Rendering:
    width: int
    errors: list[str] = field(default_factory=list)  # console errors/warnings and page errors
    requests: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    sideways_overflow: int = 0
    screenshot: bytes = b""

    def screenshot_stats(self) -> tuple[int, float]:
        """(distinct colours, share of non-white pixels) of the full-page screenshot."""
        img = Image.open(io.BytesIO(self.screenshot)).convert("RGB")
        small = img.resize((max(1, img.width // 4), max(1, img.height // 4)))
        pixels = list(small.getdata())
        return len(small.getcolors(maxcolors=1 << 24) or []), sum(1 for p in pixels if sum(p) < 735) / len(pixels)


def render(path: Path, widths: tuple[int, ...] = (1280, 420)) -> list[Rendering]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    url = path.resolve().as_uri()
    results = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in widths:
                result = Rendering(width)
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.on("console", lambda m, r=result: r.errors.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda exc, r=result: r.errors.append(f"pageerror: {exc}"))
                page.on("request", lambda req, r=result: r.requests.append(req.url))
                page.goto(url, wait_until="load")
                result.images = page.evaluate("document.images.length")
                result.broken_images = page.evaluate(
                    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
                result.sideways_overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
                result.screenshot = page.screenshot(full_page=True)
                page.close()
                results.append(result)
        finally:
            browser.close()
    return results
