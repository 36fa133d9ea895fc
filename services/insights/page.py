"""The ops dashboard page: one HTML file, its script and style, and Plotly's bundle from the installed
plotly package, so the page works without internet. No auth here: the page holds no data; it asks the
user for an API key and reads the JSON API under /v1/dashboard with it."""
from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

page = APIRouter(tags=["dashboard"], include_in_schema=False)

_HERE = Path(__file__).resolve().parent / "dashboard"
_OWN = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
_JS = _OWN["dashboard.js"]
# The key may arrive in ?key=: never send the URL on as a referrer; the page loads nothing from elsewhere.
_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'",
}


@lru_cache(maxsize=2)
def _plotly(gzipped: bool) -> bytes:
    data = (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return gzip.compress(data, 6) if gzipped else data


@page.get("/dashboard", summary="The ops dashboard (HTML; it asks for an API key)")
def dashboard():
    return Response((_HERE / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                    headers=_HEADERS)


@page.get("/dashboard/assets/{name}", summary="The dashboard's script, style and Plotly's bundle")
def asset(name: str, request: Request):
    if name == "plotly.min.js":  # read once; 4.8 MB, 1.4 MB gzipped
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        headers = {**_HEADERS, "Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(_plotly(gzipped), media_type=_JS, headers=headers)
    if name not in _OWN:
        raise HTTPException(404, f"no dashboard asset {name!r}")
    return Response((_HERE / name).read_bytes(), media_type=_OWN[name], headers=_HEADERS)
