"""The embedded default (SQLite, tasks inline: what `make run` runs) keeps the day rows
and spans too: after seed_demo, every period and device count of every email equals a
distinct count over the raw events."""

import json

from tests.test_settings import sqlite_manage

SCRIPT = """
import json
from collections import defaultdict
from datetime import timedelta
from django_scopes import scope
from campaigns.models import Delivery, EmailNode, Workspace
from clickmap import metrics
from tracking.models import ClickEvent, OpenEvent

workspace = Workspace.objects.get()
checked, wrong = 0, []
with scope(workspace=workspace):
    clicks = list(ClickEvent.objects.filter(link__isnull=False).values_list(
        "delivery__variant__node_id", "link_id", "delivery__customer_id", "at", "device",
        "reliable"))
    opens = list(OpenEvent.objects.values_list(
        "delivery__variant__node_id", "delivery__customer_id", "at", "device", "reliable"))
    days = sorted({c[3].date() for c in clicks})
    middle = days[len(days) // 2]
    for node in EmailNode.objects.all():
        for date_from, date_to, device, reliable in (
            (middle, middle, None, False),
            (middle, None, "mobile", True),
            (None, middle, "desktop", False),
            (days[0], days[-1], None, True),
        ):
            scope_ = metrics.Scope(workspace=workspace, campaign_id=node.campaign_id,
                node_id=node.pk, date_from=date_from, date_to=date_to, device=device,
                reliable_only=reliable)

            def keep(at, dev, rel):
                return ((date_from is None or at.date() >= date_from)
                        and (date_to is None or at.date() <= date_to)
                        and (device is None or dev == device) and (rel or not reliable))

            want = defaultdict(lambda: [0, set()])
            for n, link, customer, at, dev, rel in clicks:
                if n == node.pk and keep(at, dev, rel):
                    want[link][0] += 1
                    want[link][1].add(customer)
            want = {link: (t, len(who)) for link, (t, who) in want.items()}
            got = {k: v for k, v in metrics.link_counts(scope_).items() if v != (0, 0)}
            totals = metrics.email_totals(scope_)
            clickers = {c for n, _, c, at, dev, rel in clicks
                        if n == node.pk and keep(at, dev, rel)}
            openers = {c for n, c, at, dev, _ in opens
                       if n == node.pk and keep(at, dev, True)}
            checked += 1
            if got != want or totals.clickers != len(clickers):
                wrong.append([str(scope_), "clicks"])
            if not reliable and totals.unique_opens != len(openers):
                wrong.append([str(scope_), "opens"])
print(json.dumps({"checked": checked, "window": workspace.unique_window_hours,
                  "wrong": wrong}))
"""


def test_period_and_device_counts_are_exact_on_the_embedded_default(tmp_path):
    manage = sqlite_manage(tmp_path / "demo.sqlite3")

    manage("migrate", "--noinput")
    manage("seed_demo", "--customers", "300", "--no-previews")
    report = json.loads(manage("shell", "-c", SCRIPT).splitlines()[-1])
    assert report["window"] == 0  # the brute count above is "ever" mode's
    assert report["checked"] >= 12  # every email node of the demo, four scopes each
    assert report["wrong"] == []
