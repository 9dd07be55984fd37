"""The apps as files the server ships: each page and module served from the package with its type and a
same-origin content security policy, nothing referring to another origin, every module a page imports
served, the pages answering while the server still waits for its dependencies, and the sign-in link that
`dispatch token --link` prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp.test_utils import TestClient, TestServer

from dispatch.api.apps import PAGES, PATHS
from dispatch.app import create_app
from dispatch.auth import Role, verify_token
from dispatch.clock import SystemClock
from dispatch.config import Settings
from tests.conftest import SECRET
from tests.orders.helpers import Client
from tests.timing import SECOND

WEB = Path(__file__).resolve().parents[2] / "dispatch" / "web"
IMPORT = re.compile(r"""(?:^|\n)\s*import\b[^;]*?from\s+["']([^"']+)["']|import\(["']([^"']+)["']\)""")
REFERENCE = re.compile(r"""(?:src|href)=["']([^"']*)["']""")


def _files() -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.is_file())


async def test_every_page_and_file_is_served_with_its_type_and_a_same_origin_policy(client: Client) -> None:
    assert set(PAGES) | {f"/static/{p.name}" for p in (WEB / "static").iterdir()} == PATHS
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    for path in sorted(PATHS):
        r = await client.get(path)
        assert r.status == 200, path
        name = PAGES[path][0] if path in PAGES else path.rsplit("/", 1)[1]
        assert r.content_type == types[name[name.rindex(".") :]], path
        assert (
            await r.read() == (WEB / ("static/" + name if path.startswith("/static/") else name)).read_bytes()
        )
        policy = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe" not in policy
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = await client.get("/static/../app.py")
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"


def test_nothing_refers_to_another_origin_and_every_import_is_served() -> None:
    for f in _files():
        text = f.read_text()
        for ref in REFERENCE.findall(text):
            assert ref.startswith(("/", "#", "data:")), (f.name, ref)
            if ref.startswith("/"):
                assert urlsplit(ref).path in PATHS | {"/openapi.json", "/asyncapi.json"}, (f.name, ref)
        for found in IMPORT.findall(text):
            module = found[0] or found[1]
            assert module.startswith("./"), (f.name, module)
            assert f"/static/{module[2:]}" in PATHS, (f.name, module)
        # Scripts are modules loaded by src (no inline script: the policy forbids it).
        if f.suffix == ".html":
            assert "<script>" not in text and not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f.name
            assert 'rel="icon" href="data:,"' in text, f.name  # no request for a favicon


async def test_pages_load_while_the_server_waits_for_postgresql(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, startup_timeout_s=30, run_timers=False)
    app = create_app(
        settings,
        secret=SECRET,
        database_url="postgresql://nobody@127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
        start_in_background=True,
    )
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/shop")
        assert r.status == 200 and r.content_type == "text/html"
        r = await c.get("/static/api.js")
        assert r.status == 200
        r = await c.get("/v1/area")
        assert r.status == 503


def test_token_link_opens_the_roles_app_signed_in(tmp_path: Path) -> None:
    env = {**os.environ, "DISPATCH_SECRET": SECRET, "DISPATCH_PORT": "8123", "DISPATCH_HOST": "0.0.0.0"}

    def link(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dispatch", "token", *args, "--data-dir", str(tmp_path), "--link"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30 * SECOND,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    pages = {"admin": "/console", "shop": "/shop", "courier": "/courier", "resident": "/order"}
    for role, page in pages.items():
        url = urlsplit(link("--role", role, "--subject", "someone"))
        assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:8123", page)
        token = url.fragment.removeprefix("token=")
        who = verify_token(SECRET, token, SystemClock().now())
        assert (who.role, who.subject) == (Role(role), "someone")
    behind = urlsplit(link("--role", "admin", "--subject", "ops", "--url", "https://ops.example.org/"))
    assert (behind.scheme, behind.netloc, behind.path) == ("https", "ops.example.org", "/console")
