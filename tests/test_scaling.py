"""Several tracker hosts (docs/scaling.md): each runs its own gunicorn, spool and
ingester, all against one database. Two real trackers take clicks of the same
deliveries at once while two real ingester processes, one per spool, store them:
every click is stored exactly once, counted by its own URL in plain Python."""

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django_scopes import scopes_disabled

from tests.conftest import database_url
from tests.factories import sent_deliveries
from tests.tracker_server import Tracker
from tracking.models import ClickEvent, EventChange
from tracking.tokens import ClickToken, sign_token

ROOT = Path(__file__).resolve().parents[1]
SHOP = "https://shop.example/a"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CLICKS_PER_HOST = 300


@pytest.fixture
def deliveries(make_workspace):
    workspace = make_workspace("Shop")
    rows = [(f"c{n}", f"c{n}@example.test", {}) for n in range(4)]
    return sent_deliveries(workspace, f'<p><a href="{SHOP}">A</a></p>', rows)


class Ingester:
    """`manage.py ingest_events --follow` on one host's spool, as its own process."""

    def __init__(self, spool: Path, log_path: Path):
        self._log = log_path.open("wb")
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env |= {
            "DATABASE_URL": database_url(f"ingester-{spool.name}"),
            "TRACKING_SPOOL_DIR": str(spool),
            "TRACKING_INGEST_INLINE": "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "ingest_events", "--follow", "--interval", "0.2"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self._log.close()
        return self.log_path.read_text(errors="replace")


def spooled(spool: Path) -> list[Path]:
    return list(spool.glob("*.jsonl")) + list(spool.glob("*.tmp"))


@pytest.mark.django_db(transaction=True)
def test_two_tracker_hosts_with_their_own_spool_and_ingester_store_every_click_once(
    deliveries, tmp_path
):
    with scopes_disabled():
        link_of = {d.pk: d.template_version.links.get().pk for d in deliveries}
    spools = [tmp_path / "host-a" / "spool", tmp_path / "host-b" / "spool"]
    trackers = [Tracker(tmp_path, spool, {}, workers=2) for spool in spools]
    ingesters = [Ingester(spool, tmp_path / f"ingest-{n}.log") for n, spool in enumerate(spools)]
    sent = Counter()  # url -> clicks answered with its 302
    errors = []

    def click(host: int) -> None:
        try:
            for n in range(CLICKS_PER_HOST):
                # Both hosts click every delivery: their ingesters lock the same ones.
                delivery = deliveries[n % len(deliveries)]
                url = f"{SHOP}?host={host}&n={n}"
                token = sign_token(ClickToken(delivery.pk, link_of[delivery.pk], url))
                status, headers, _ = trackers[host].request(
                    "GET", f"/c/{token}", {"User-Agent": CHROME}
                )
                assert (status, headers.get("Location")) == (302, url)
                sent[url] += 1
        except Exception as error:  # reported in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=click, args=(host,)) for host in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for tracker in trackers:
            tracker.stop()  # its workers close their files: every one can be ingested
        deadline = time.monotonic() + 120
        while any(spooled(spool) for spool in spools) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # an ingester's last transaction commits before its file goes
    finally:
        for tracker in trackers:
            tracker.stop()
        logs = [ingester.stop() for ingester in ingesters]
    assert not errors, errors
    assert not any(spooled(spool) for spool in spools), logs
    # Each ingester stored its own host's clicks (it never saw the other's spool).
    for host, log in enumerate(logs):
        stored = sum(int(n) for n in _ingested_counts(log))
        assert stored == CLICKS_PER_HOST, (host, log)

    assert len(sent) == 2 * CLICKS_PER_HOST and set(sent.values()) == {1}
    with scopes_disabled():
        rows = list(ClickEvent.objects.values_list("url", "event_id", "delivery_id", "link_id"))
        # Exactly once: every URL clicked is stored once, nothing else is stored, and no
        # event id repeats.
        assert Counter(url for url, *_ in rows) == sent
        assert len({event_id for _, event_id, *_ in rows}) == len(rows)
        for url, _, delivery_id, link_id in rows:
            n = int(url.rsplit("=", 1)[1])
            assert delivery_id == deliveries[n % len(deliveries)].pk
            assert link_id == link_of[delivery_id]
        # The change log names each (delivery, link) the clicks touched, for the rollups.
        assert {(c.delivery_id, c.link_id) for c in EventChange.objects.all()} == {
            (d.pk, link_of[d.pk]) for d in deliveries
        }


def _ingested_counts(log: str) -> list[str]:
    return re.findall(r"ingested (\d+) clicks", log)
