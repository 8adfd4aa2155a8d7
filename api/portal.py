"""The web portal: a single-page app of plain ES modules (portal/src), served by the API itself.

``/`` serves the page, ``/portal/`` its modules and styles, ``/portal/vendor/`` the two pinned npm
files it needs (ethers, Chart.js) straight from portal/node_modules: no CDN, no bundler. The user's
key never reaches the server: the page unlocks the keystore and signs in the browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from api import problems

PORTAL_DIR: Final = Path(__file__).resolve().parent.parent / "portal"

# The only files served from node_modules: name in the page -> path under node_modules.
VENDOR: Final = {
    "ethers.min.js": "ethers/dist/ethers.min.js",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}

# The page loads only its own origin's scripts; the wallet extension (window.ethereum) needs nothing more.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def install(app: FastAPI, portal_dir: Path = PORTAL_DIR) -> None:
    """Serves the portal at ``/`` (replacing nothing of the API: every API path stays as it is)."""
    src = portal_dir / "src"
    modules = portal_dir / "node_modules"

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = src / "index.html"
        if not page.is_file():
            return Response(
                '{"service": "receivables registry", "docs": "/docs", "openapi": "/openapi.json"}',
                media_type="application/json",
            )
        return FileResponse(page, media_type="text/html", headers={"Content-Security-Policy": CSP})

    def vendor_route(name: str, relative: str) -> None:
        def vendor(request: Request) -> Response:
            path = modules / relative
            if not path.is_file():
                return problems.problem_response(
                    request, 503, "portal_not_installed", f"{relative} is missing: run `make bootstrap` (npm ci)"
                )
            headers = {"Cache-Control": "public, max-age=3600"}
            return FileResponse(path, media_type="text/javascript", headers=headers)

        # One literal path per file (no path parameter): nothing else under node_modules is reachable.
        app.add_api_route(f"/portal/vendor/{name}", vendor, methods=["GET"], include_in_schema=False)

    for name, relative in VENDOR.items():
        vendor_route(name, relative)

    app.mount("/portal", StaticFiles(directory=src, check_dir=False), name="portal")
