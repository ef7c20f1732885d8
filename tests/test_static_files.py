"""Static files in production, from a clean checkout, following README's steps: with
DEBUG off, `collectstatic` then gunicorn serves the pages' CSS and htmx (hashed names,
through WhiteNoise) with 200; without `collectstatic` gunicorn does not start and says
what to run."""

import http.client
import io
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import database_url, free_port
from tests.testenv import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "clickmap.example.com"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """HEAD as a fresh clone has it: tracked files only, no var/, nothing collected."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target = tmp_path / "checkout"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    assert not (target / "var").exists()
    return target


def production_env(static_root: Path, database: str) -> dict:
    """README's production settings (DEBUG, HTTPS_ONLY and STATIC_MANIFEST at their
    defaults), nothing of the test run's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "HTTPS_ONLY", "STATIC_MANIFEST", "DJANGO_ALLOW_ASYNC_UNSAFE"}
        and not k.startswith(("PYTEST", "DJANGO_SETTINGS"))
    }
    return env | {
        "SECRET_KEY": "production-" + "k" * 50,
        "DATABASE_URL": database,
        "REDIS_URL": TEST_REDIS_URL,
        "ALLOWED_HOSTS": HOST,
        "CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "BEHIND_TLS_PROXY": "1",
        "STATIC_ROOT": str(static_root),
    }


def gunicorn(checkout: Path, env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [str(BIN / "gunicorn"), "clickmap.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1", "--control-socket", str(log.with_suffix(".ctl"))]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=checkout, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return process, port


def get(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": HOST, "X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wait_answering(process, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            get(port, "/healthz")
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


@pytest.mark.django_db
def test_collectstatic_then_gunicorn_serves_the_css_and_htmx_with_debug_off(checkout, tmp_path):
    env = production_env(tmp_path / "static", database_url())
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "static" / "staticfiles.json").is_file()  # STATIC_ROOT, as set
    assert not (checkout / "var").exists()
    log = tmp_path / "gunicorn.log"
    process, port = gunicorn(checkout, env, log)
    try:
        wait_answering(process, port, log)
        status, _, page = get(port, "/login/")
        assert status == 200, page[:2000]
        html = page.decode()
        css = re.search(r'<link rel="stylesheet" href="(/static/css/app\.[0-9a-f]{12}\.css)"', html)
        htmx = re.search(r'<script src="(/static/vendor/htmx\.min\.[0-9a-f]{12}\.js)"', html)
        assert css and htmx, html
        for url, source, kind in (
            (css[1], "static/css/app.css", "text/css"),
            (htmx[1], "static/vendor/htmx.min.js", "javascript"),
        ):
            status, headers, body = get(port, url)
            assert status == 200, url
            assert kind in headers["Content-Type"]
            assert body == (checkout / source).read_bytes()  # the checkout's file, whole
            assert "immutable" in headers.get("Cache-Control", "")  # hashed: cached for ever
        assert get(port, "/static/css/missing.css")[0] == 404
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.django_db
def test_without_collectstatic_gunicorn_refuses_to_start_and_says_what_to_run(checkout, tmp_path):
    env = production_env(tmp_path / "never-collected", database_url())
    log = tmp_path / "gunicorn.log"
    process, port = gunicorn(checkout, env, log)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"gunicorn started without its static files:\n{log.read_text()}")
    assert process.returncode != 0
    text = log.read_text()
    assert "Static files are not collected into STATIC_ROOT" in text
    assert f"there is no {tmp_path / 'never-collected' / 'staticfiles.json'}" in text
    assert "python manage.py collectstatic --noinput" in text
