"""Screenshots of the web portal for the README, taken from a running `registry up` stack.

Signs in with each demo keystore (``DATA_DIR/keys``, listed in ``identities.json``; password from
``REGISTRY_DEMO_PASSWORD`` or the demo default) in headless Chromium, the way a user does (the keystore
is unlocked in the page), waits until every panel and chart has loaded, and saves the sign-in page and
each role's home page, full page at 1360 px wide:

    docs/screenshots/signin.png, debtor.png, creditor.png, factor.png, auditor.png, admin.png

Usage (the stack prints its API URL; ``registry up`` defaults to http://127.0.0.1:8000 and .data):

    python scripts/screenshots.py [--api URL] [--data-dir DIR] [--out DIR] [--width 1360]

Exit 0 when every page was saved without an error in the page, 1 when a page showed an error (the
picture is still saved, to look at), 2 on bad setup (no stack at the URL, no keystores, no browser).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ROLES = ("debtor", "creditor", "factor", "auditor", "admin")
DEFAULT_PASSWORD = "registry-demo"  # registry.settings.DEMO_PASSWORD; demo only, printed by `registry up`
TIMEOUT_MS = 60_000

# True once nothing on the page is still loading: no "Loading…" placeholder, every chart drawn.
SETTLED_JS = """() => {
  const loading = [...document.querySelectorAll('.empty, .hint, p')].some(e => e.textContent.trim() === 'Loading…');
  const charts = [...document.querySelectorAll('canvas[data-testid^="chart-"]')];
  const drawn = charts.every(c => window.Chart && window.Chart.getChart(c));
  return !loading && drawn && document.querySelector('#view').children.length > 0;
}"""


class SetupError(Exception):
    """Raised when the stack, the keystores or the browser are not there."""


@dataclass(frozen=True)
class Identity:
    role: str
    name: str
    keystore: Path


def identities(data_dir: Path) -> dict[str, Identity]:
    """The first demo identity of each role, from the keystores' index."""
    index = data_dir / "keys" / "identities.json"
    try:
        listed = json.loads(index.read_text())["identities"]
    except FileNotFoundError:
        raise SetupError(f"{index} is missing: is {data_dir} the data dir of a `registry up` stack?") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"{index} is not the demo identities' index: {exc}") from None
    found: dict[str, Identity] = {}
    for entry in listed:
        for role in entry["roles"]:
            path = index.parent / entry["file"]
            if role in ROLES and role not in found and path.is_file():
                found[role] = Identity(role, entry["name"], path)
    missing = [r for r in ROLES if r not in found]
    if missing:
        raise SetupError(f"no keystore in {index.parent} for: {', '.join(missing)}")
    return found


def check_stack(api: str) -> None:
    import httpx

    try:
        health = httpx.get(f"{api}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SetupError(f"no registry API at {api} ({exc}); start one with `registry up`") from None
    if health.get("status") != "ok":
        raise SetupError(f"the API at {api} is not healthy: {health}")


def shoot(api: str, data_dir: Path, out: Path, width: int, password: str) -> list[str]:
    """Saves the pictures; returns the problems seen in the pages (empty: all clean)."""
    from playwright.sync_api import Page, expect, sync_playwright

    if not CHROMIUM.exists():
        raise SetupError(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    who = identities(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:

            def tab(label: str) -> tuple[Page, list[str]]:
                context = browser.new_context(viewport={"width": width, "height": 900})
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                seen: list[str] = []
                page.on("pageerror", lambda e: seen.append(f"{label}: {e}"))
                page.on("console", lambda m: seen.append(f"{label}: {m.text}") if m.type == "error" else None)
                return page, seen

            def sign_in(page: Page, identity: Identity) -> None:
                page.goto(f"{api}/#/signin")
                page.get_by_test_id("keystore-file").set_input_files(str(identity.keystore))
                page.get_by_test_id("keystore-password").fill(password)

            def save(page: Page, name: str) -> Path:
                page.evaluate("window.scrollTo(0, 0)")
                path = out / f"{name}.png"
                page.screenshot(path=str(path), full_page=True)
                return path

            page, seen = tab("signin")
            sign_in(page, who["creditor"])
            print(f"signin    -> {save(page, 'signin')}")
            page.context.close()
            problems += seen

            for role in ROLES:
                identity = who[role]
                page, seen = tab(role)
                started = time.monotonic()
                sign_in(page, identity)
                page.get_by_test_id("signin-submit").click()
                expect(page.get_by_test_id(f"nav-{role}")).to_have_class("active")
                expect(page.locator("#asof")).to_contain_text("as of block")
                page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS)
                page.wait_for_timeout(500)  # let the event stream and late panels fill in
                for box in page.get_by_test_id("error").all():
                    seen.append(f"{role}: the page shows an error: {box.inner_text()}")
                path = save(page, role)
                print(f"{role:9} -> {path} ({identity.name}, {time.monotonic() - started:.1f} s)")
                page.context.close()
                problems += [s for s in seen if "AbortError" not in s]
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the stack's API (and portal) URL")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data", help="the stack's data dir (keys/)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1360, help="viewport width in pixels")
    args = parser.parse_args(argv)
    password = os.environ.get("REGISTRY_DEMO_PASSWORD") or DEFAULT_PASSWORD
    api = args.api.rstrip("/")
    try:
        check_stack(api)
        problems = shoot(api, args.data_dir, args.out, args.width, password)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
