"""The license server's HTTP side (the seed's NTLS web interface, on its `ui` address).

- `GET /license.json`: the licence and its use, in the reference's shape;
- `GET /license.lic`: the licence file in force, for downstream license servers (online mode);
- `GET /`: a page that shows the licence and uploads a new one;
- `POST /license`: upload a licence file (multipart field `license`), with
  `Authorization: Token <admin token>`; it is verified before it is stored, and takes effect
  at once.
"""

from __future__ import annotations

import hmac
import html
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from facegrid.licensing import signing, sources
from facegrid.licensing.core import LicenceError, LicenseServer

MAX_LICENCE_BYTES = 64 * 1024


def create_app(
    server: LicenseServer,
    key: Ed25519PublicKey,
    installation: str,
    folder: Path | None,
    admin_token: str,
) -> Starlette:
    def error(status: int, code: str, reason: str) -> JSONResponse:
        return JSONResponse({"code": code, "reason": reason}, status_code=status)

    async def license_json(request: Request) -> JSONResponse:
        return JSONResponse({**server.info(), "installation": installation})

    async def license_file(request: Request) -> Response:
        if not server.licence_file or not server.validity()[0]:
            return error(404, "NOT_FOUND", "no valid licence file is in force")
        return Response(server.licence_file, media_type="application/json")

    async def upload(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "")
        if not admin_token or not hmac.compare_digest(given, f"Token {admin_token}"):
            return error(401, "AUTH_FAILED", "the admin token is missing or wrong")
        if folder is None:
            return error(409, "NO_LICENSE_DIR", "no license-dir is set to keep licence files in")
        try:
            form = await request.form(max_files=1, max_fields=1, max_part_size=MAX_LICENCE_BYTES)
        except (MultiPartException, HTTPException) as e:
            return error(400, "BAD_PARAM", f"the form cannot be read: {e}")
        try:
            part = form.get("license")
            if not isinstance(part, UploadFile):
                return error(400, "BAD_PARAM", "send the licence file as the `license` part")
            data = await part.read(MAX_LICENCE_BYTES + 1)
        finally:
            await form.close()
        if len(data) > MAX_LICENCE_BYTES:
            return error(413, "BAD_PARAM", f"a licence file is at most {MAX_LICENCE_BYTES} bytes")
        try:
            licence = signing.read(data, key, installation=installation, now=server.clock())
        except LicenceError as e:
            return error(400, "BAD_LICENSE", str(e))
        path = sources.store(folder, data, licence.license_id)
        server.install(licence, str(path), "offline", data)
        return JSONResponse({**server.info(), "installation": installation})

    async def page(request: Request) -> HTMLResponse:
        info = json.dumps({**server.info(), "installation": installation}, indent=2)
        return HTMLResponse(_PAGE.format(info=html.escape(info)))

    return Starlette(
        routes=[
            Route("/license.json", license_json),
            Route("/license.lic", license_file),
            Route("/license", upload, methods=["POST"]),
            Route("/", page),
        ]
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FaceGrid licensing</title>
<style>body{{font:16px system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:1rem;overflow:auto}}label{{display:block;margin:.5rem 0}}</style>
</head><body>
<h1>FaceGrid licensing</h1>
<h2>Licence in force</h2>
<pre>{info}</pre>
<h2>Upload a licence</h2>
<form id="upload">
<label>Licence file <input type="file" name="license" accept=".lic" required></label>
<label>Admin token <input type="password" name="token" autocomplete="off" required></label>
<button>Upload</button>
</form>
<p id="result" role="status"></p>
<script>
document.getElementById("upload").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const form = new FormData(event.target);
  const body = new FormData();
  body.append("license", form.get("license"));
  const response = await fetch("license", {{
    method: "POST", body, headers: {{Authorization: "Token " + form.get("token")}}
  }});
  const answer = await response.json();
  document.getElementById("result").textContent =
    response.ok ? "Installed." : answer.reason;
  if (response.ok) location.reload();
}});
</script>
</body></html>
"""
