"""A failing spool loses no redirect and never half a click: with a real gunicorn and a
real read-only or full file system, every /c/ request is answered, every answered
click is either stored whole or counted in an ERROR line, /healthz says so while
writes fail, and once the disk is back the next clicks are stored whole. Ingestion
skips what is not a whole event up to the next newline and says exactly what."""

import errno
import io
import os

import pytest
from django.core.management import call_command
from django.test import Client
from django_scopes import scopes_disabled

from tests.factories import sent_deliveries
from tests.tracker_server import Tracker, bind_mount, remount, spool_losses, tmpfs
from tracking.ingest import ingest_spool
from tracking.models import ClickEvent, OpenEvent
from tracking.spool import Spool, read_records
from tracking.tokens import ClickToken, OpenToken, sign_token

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SHOP = "https://shop.example/a"


@pytest.fixture
def delivery(make_workspace):
    workspace = make_workspace("Shop")
    (delivery,) = sent_deliveries(
        workspace, f'<p><a href="{SHOP}">A</a></p>', [("c1", "ann@example.test", {})]
    )
    return delivery


def click_paths(delivery, label: str, count: int) -> dict[str, str]:
    """`count` distinct click tokens of one link (destinations differ by a query string,
    so the stored URL says which request a click came from): url -> /c/ path."""
    with scopes_disabled():
        link = delivery.template_version.links.get()
    urls = [f"{SHOP}?{label}={n}" for n in range(count)]
    return {url: f"/c/{sign_token(ClickToken(delivery.pk, link.pk, url))}" for url in urls}


def click_all(tracker: Tracker, paths: dict[str, str]) -> None:
    for url, path in paths.items():
        status, headers, _ = tracker.request("GET", path, {"User-Agent": CHROME})
        assert (status, headers.get("Location")) == (302, url)


def stored_urls() -> set[str]:
    with scopes_disabled():
        return set(ClickEvent.objects.values_list("url", flat=True))


def fill(directory) -> int:
    """Write a file in `directory` until the file system refuses a single byte more."""
    written = 0
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as filler:
        for chunk in (b"x" * 65536, b"x" * 4096, b"x"):
            try:
                while True:
                    written += filler.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    return written


@pytest.mark.parametrize("mount", ["tmpfs remounted read-only", "read-only bind mount"])
def test_a_read_only_spool_still_redirects_every_click_and_fails_the_health_check(
    delivery, tmp_path, mount
):
    if mount == "read-only bind mount":
        mounted = bind_mount(tmp_path / "disk", tmp_path / "mnt")
    else:
        mounted = tmpfs(tmp_path / "mnt", "1m")
    with mounted as mnt:
        spool_dir = mnt / "spool"
        spool_dir.mkdir()
        remount(mnt, "ro")
        tracker = Tracker(tmp_path, spool_dir, {})
        try:
            lost = click_paths(delivery, "ro", 12)
            click_all(tracker, lost)
            with scopes_disabled():
                pixel = f"/o/{sign_token(OpenToken(delivery.pk))}"
            status, headers, body = tracker.request("GET", pixel, {"User-Agent": CHROME})
            assert (status, headers["Content-Type"], body[:6]) == (200, "image/gif", b"GIF89a")
            status, _, body = tracker.request("GET", "/healthz")
            assert status == 503 and b"Read-only file system" in body

            remount(mnt, "rw")
            assert tracker.request("GET", "/healthz")[:1] == (200,)
        finally:
            tracker.stop()
        # No write succeeded after the failures: each worker reported its total at exit.
        log = tracker.log()
        assert "Read-only file system" in log
        assert spool_losses(log) == len(lost) + 1  # the clicks and the open

        tracker = Tracker(tmp_path, spool_dir, {})
        try:
            kept = click_paths(delivery, "rw", 5)
            click_all(tracker, kept)
        finally:
            tracker.stop()
        report = ingest_spool(spool_dir)
    assert stored_urls() == set(kept)
    with scopes_disabled():
        assert not OpenEvent.objects.exists()
    assert report.bad_lines == 0


def test_a_full_disk_loses_only_logged_clicks_and_the_next_ones_are_stored_whole(
    delivery, tmp_path
):
    with tmpfs(tmp_path / "mnt", "512k") as mnt:
        spool_dir = mnt / "spool"
        tracker = Tracker(tmp_path, spool_dir, {})
        try:
            before = click_paths(delivery, "before", 5)
            click_all(tracker, before)
            assert tracker.request("GET", "/healthz")[:1] == (200,)

            fill(mnt)
            # The spool files' last pages still take a few lines; then writes come up
            # short or fail: each of these is stored whole or counted as lost.
            during = click_paths(delivery, "full", 40)
            click_all(tracker, during)
            status, _, body = tracker.request("GET", "/healthz")
            assert status == 503 and b"No space left on device" in body

            (mnt / "filler").unlink()
            assert tracker.request("GET", "/healthz")[:1] == (200,)
            after = click_paths(delivery, "after", 10)
            click_all(tracker, after)
        finally:
            tracker.stop()
        log = tracker.log()
        report = ingest_spool(spool_dir)

    stored = stored_urls()
    lost = spool_losses(log)
    assert lost > 0, "the disk never refused a click: the test did not fill it"
    assert set(before) <= stored and set(after) <= stored
    assert len(stored & set(during)) + lost == len(during)
    assert stored <= set(before) | set(during) | set(after)
    # Whole lines only: no fragment of a cut write was left for the next one to continue.
    assert (report.bad_lines, report.lost) == (0, [])
    assert "No space left on device" in log


def test_the_spool_writer_leaves_whole_lines_only_on_a_full_disk(tmp_path, delivery):
    with tmpfs(tmp_path / "mnt", "64k") as mnt:
        writer = Spool(mnt / "spool", rotate_seconds=3600)
        record = {"k": "c", "t": 1.7e9, "d": delivery.pk, "l": 0, "ua": CHROME, "m": "GET"}
        written = [writer.append(dict(record, u=f"{SHOP}?n={n}")) for n in range(3)]
        fill(mnt)
        # The file's last page takes some more; one line then comes up short and is cut.
        written += [writer.append(dict(record, u=f"{SHOP}?n={n}")) for n in range(3, 40)]
        assert None in written
        assert writer.failures.count == written.count(None)
        (mnt / "filler").unlink()
        written += [writer.append(dict(record, u=f"{SHOP}?n={n}")) for n in range(40, 45)]
        writer.close()
        [path] = list((mnt / "spool").glob("*.jsonl"))
        fd = os.open(path, os.O_RDONLY)
        try:
            spooled = read_records(fd)
        finally:
            os.close(fd)
    assert (spooled.bad, spooled.incomplete_tail) == ([], False)
    assert [r["id"] for r in spooled.records] == [i for i in written if i is not None]
    assert all(i is not None for i in written[40:])


def test_ingestion_skips_to_the_next_newline_and_reports_exactly_what_was_lost(delivery, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    d = delivery.pk
    whole = f'{{"k":"o","t":1700000000.0,"d":{d},"ua":"","id":"{"1" * 32}"}}'
    merged = f'{{"k":"o","t":1700000001.0,"d":{d},"ua"'  # a write cut short…
    merged += f'{{"k":"o","t":1700000002.0,"d":{d},"ua":"","id":"{"2" * 32}"}}'
    after = f'{{"k":"o","t":1700000003.0,"d":{d},"ua":"","id":"{"3" * 32}"}}'
    tail = '{"k":"o","t":1700000004.0,"d":'  # …and one the file ends in
    content = f"{whole}\n{merged}\n{after}\n{tail}".encode()
    (spool_dir / "0000-host-1-1.jsonl").write_bytes(content)

    report = ingest_spool(spool_dir)

    assert report.opens == 2  # the whole lines before and after the damage
    assert report.bad_lines == 2
    assert report.bad_bytes == len(merged) + 1 + len(tail)
    assert report.lost == [
        f"0000-host-1-1.jsonl: skipped 2 line(s), {len(merged) + 1 + len(tail)} bytes; "
        "the last one had no newline (a write cut short)"
    ]
    assert (spool_dir / "bad" / "0000-host-1-1.jsonl").read_text() == f"{merged}\n{tail}\n"
    with scopes_disabled():
        assert sorted(e.event_id.hex for e in OpenEvent.objects.all()) == ["1" * 32, "3" * 32]


def test_ingest_events_prints_what_it_skipped(delivery, spool_dir):
    spool_dir.mkdir(parents=True)
    good = f'{{"k":"o","t":1700000000.0,"d":{delivery.pk},"ua":"","id":"{"4" * 32}"}}'
    (spool_dir / "0000-host-2-1.jsonl").write_text(f"{good}\nnot an event\n")
    out, err = io.StringIO(), io.StringIO()

    call_command("ingest_events", stdout=out, stderr=err)

    assert "ingested 0 clicks and 1 opens from 1 files (0 dropped, 1 bad lines" in out.getvalue()
    assert err.getvalue() == "lost: 0000-host-2-1.jsonl: skipped 1 line(s), 13 bytes\n"


def test_health_check_is_ok_while_the_spool_takes_events(spool_dir, settings):
    settings.SERVICE_ROLE = "tracker"
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "spool": {"ok": True, "detail": "writable", "value": None, "threshold": None}
    }
