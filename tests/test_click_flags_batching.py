"""A delivery's stored click verdicts never depend on how its clicks were batched: they
always equal the classifier run over all of the delivery's stored clicks, whatever
the batches, their order and two ingesters running at once against PostgreSQL; and
the reliable rollups follow every reclassification (they equal a recount)."""

import bisect
import json
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django_scopes import scope, scopes_disabled
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campaigns.models import Delivery
from campaigns.sending import plan_deliveries
from clickmap import metrics
from clickmap.rollups import aggregate
from tests.factories import customers, sendable_campaign
from tracking.classify import ClickFacts, Thresholds, classify_clicks
from tracking.ingest import MAX_SLOT_LOCKS, ingest_spool
from tracking.models import ClickEvent

pytestmark = pytest.mark.django_db(transaction=True)  # real concurrent transactions

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HTML = "".join(f'<p><a href="https://shop.example/{n}">Link {n}</a></p>' for n in range(1, 6))
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SCANNER = "Barracuda Sentinel (EE)"
HONEYPOT = "honeypot"


class World:
    """A campaign of five links sent to `people` customers `lead` before T0, with
    `thresholds`."""

    def __init__(self, make_workspace, thresholds: Thresholds, people=1, lead=timedelta(hours=1)):
        self.workspace = make_workspace()
        self.workspace.bot_min_seconds_after_delivery = thresholds.min_seconds_after_delivery
        self.workspace.bot_burst_links = thresholds.burst_links
        self.workspace.bot_burst_seconds = thresholds.burst_seconds
        self.workspace.save()
        self.thresholds = thresholds
        customers(self.workspace, [(f"c{n}", f"c{n}@example.test", {}) for n in range(people)])
        self.campaign = sendable_campaign(self.workspace, HTML, subject="S")
        with scope(workspace=self.workspace):
            plan_deliveries(self.campaign.nodes.get())
            Delivery.objects.update(status=Delivery.Status.SENT, sent_at=T0 - lead)
            self.deliveries = list(Delivery.objects.order_by("pk"))
            version = self.deliveries[0].template_version
            self.links = list(version.links.order_by("ordinal").values_list("pk", flat=True))
        self.sent_at = T0 - lead


class Click:
    """One planned click: delivery index, link index (or HONEYPOT), tenths of a second
    after T0, method, prefetch header, user agent."""

    def __init__(self, n, delivery, link, tenths, method="GET", prefetch=False, agent=CHROME):
        self.n = n
        # Unique in the table across examples: the events of earlier ones stay there.
        self.event_id = uuid.uuid4().hex
        self.delivery, self.link, self.method = delivery, link, method
        self.at = T0 + timedelta(milliseconds=100 * tenths)
        self.prefetch, self.agent = prefetch, agent

    def record(self, world: World) -> dict:
        record = {
            "id": self.event_id,
            "k": "c",
            "t": self.at.timestamp(),
            "d": world.deliveries[self.delivery].pk,
            "ua": self.agent,
            "ip": "203.0.113.0",
            "m": self.method,
            "u": "https://shop.example/",
        }
        if self.link == HONEYPOT:
            record |= {"l": 0, "h": 1}
        else:
            record["l"] = world.links[self.link]
        if self.prefetch:
            record["hd"] = {"sec_purpose": "prefetch"}
        return record

    def facts(self, world: World) -> ClickFacts:
        return ClickFacts(
            event_id=self.event_id,
            delivery_id=world.deliveries[self.delivery].pk,
            link_id=0 if self.link == HONEYPOT else world.links[self.link],
            at=self.at,
            delivered_at=world.sent_at,
            user_agent=self.agent,
            method=self.method,
            headers={"Sec-Purpose": "prefetch"} if self.prefetch else {},
            honeypot=self.link == HONEYPOT,
        )


def spool_of(world: World, clicks: list[Click]) -> Path:
    """A spool directory holding one file with these clicks, as a tracker writes it."""
    directory = Path(tempfile.mkdtemp(prefix="clickmap-batch-"))
    lines = "".join(json.dumps(c.record(world)) + "\n" for c in clicks)
    (directory / "0000000000000-test-1-1.jsonl").write_text(lines)
    return directory


def ingest_in_thread(directory: Path, started: threading.Event | None = None) -> dict:
    """ingest_spool(directory) in a thread of its own (its own database connection)."""
    outcome = {"done": threading.Event()}

    def run():
        try:
            connection.ensure_connection()
            outcome["pid"] = connection.connection.info.backend_pid
            if started:
                started.set()
            ingest_spool(directory)
        except BaseException as error:
            outcome["error"] = error
            if started:
                started.set()
        finally:
            connection.close()
            outcome["done"].set()

    outcome["thread"] = threading.Thread(target=run)
    outcome["thread"].start()
    return outcome


def ingest_at_once(first: Path, second: Path) -> None:
    """Two ingesters at once, the worst way round: the first stores its batch and
    keeps its transaction open while the second ingests, until the second is waiting
    for a lock or done; only then does the first commit."""
    stored = threading.Event()
    release = threading.Event()
    failure = {}

    def first_ingester():
        try:
            with transaction.atomic():
                ingest_spool(first)
                stored.set()
                release.wait(60)
        except BaseException as error:
            failure["error"] = error
            stored.set()
        finally:
            connection.close()

    holder = threading.Thread(target=first_ingester)
    holder.start()
    stored.wait(60)
    started = threading.Event()
    other = ingest_in_thread(second, started)
    started.wait(60)
    deadline = time.monotonic() + 60
    with connection.cursor() as cursor:
        while not other["done"].is_set() and time.monotonic() < deadline:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [other.get("pid")]
            )
            row = cursor.fetchone()
            if row and row[0] == "Lock":
                break
            time.sleep(0.02)
    release.set()
    holder.join(60)
    other["thread"].join(60)
    for outcome in (failure, other):
        if "error" in outcome:
            raise outcome["error"]


def stored_reasons(world: World) -> dict[str, str]:
    with scopes_disabled():
        return {
            e.event_id.hex: e.reason for e in ClickEvent.objects.filter(workspace=world.workspace)
        }


def by_number(world: World, clicks: list[Click]) -> dict[int, str]:
    reasons = stored_reasons(world)
    return {c.n: reasons.get(c.event_id, "not stored") for c in clicks}


def expected_reasons(world: World, clicks: list[Click]) -> dict[str, str]:
    """The classifier over all the clicks at once: what every batching must store."""
    unique = {c.event_id: c for c in clicks}
    verdicts = classify_clicks([c.facts(world) for c in unique.values()], world.thresholds)
    return {event_id: str(reason) for event_id, reason in verdicts.items()}


# --- the two cases the review reproduced -------------------------------------------


def test_a_later_batch_does_not_unflag_a_burst(make_workspace):
    world = World(make_workspace, Thresholds())  # 3 links within 2 s: a burst
    burst = [Click(1, 0, 1, 0), Click(2, 0, 2, 5), Click(3, 0, 3, 14)]  # links 2, 3, 4
    ingest_spool(spool_of(world, burst))
    assert set(stored_reasons(world).values()) == {"burst"}

    later = Click(4, 0, 3, 28)  # link 4 again at +2.8 s
    ingest_spool(spool_of(world, [later]))

    assert by_number(world, [*burst, later]) == {
        1: "burst",  # +0.0 s
        2: "burst",  # +0.5 s
        3: "burst",  # +1.4 s: its burst still holds, whatever came later
        4: "",  # +2.8 s: only link 4 within 2 s of it
    }


def test_two_ingesters_at_once_do_not_both_store_reliable(make_workspace):
    world = World(make_workspace, Thresholds())
    clicks = [Click(1, 0, 1, 0), Click(2, 0, 2, 0), Click(3, 0, 3, 5)]
    first = spool_of(world, clicks[:2])  # links 2 and 3
    second = spool_of(world, clicks[2:])  # link 4, half a second later

    ingest_at_once(first, second)

    assert by_number(world, clicks) == {1: "burst", 2: "burst", 3: "burst"}


@pytest.mark.parametrize("big_first", [True, False])
def test_a_batch_of_many_deliveries_and_a_small_one_at_once_take_turns(make_workspace, big_first):
    # Over MAX_SLOT_LOCKS deliveries, a batch locks all of them at once (one lock).
    world = World(make_workspace, Thresholds(), people=MAX_SLOT_LOCKS + 8)
    big = [Click(1, 0, 1, 0), Click(2, 0, 2, 0)]  # delivery 0: links 2 and 3…
    big += [Click(10 + n, n, 1, 0) for n in range(1, len(world.deliveries))]
    small = [Click(3, 0, 3, 5)]  # …and link 4 half a second later, in the other batch
    batches = [spool_of(world, big), spool_of(world, small)]

    ingest_at_once(*(batches if big_first else reversed(batches)))

    assert by_number(world, [*big[:2], *small]) == {1: "burst", 2: "burst", 3: "burst"}
    assert set(by_number(world, big[2:]).values()) == {""}


# --- any batching ------------------------------------------------------------------

thresholds = st.builds(
    Thresholds,
    min_seconds_after_delivery=st.sampled_from([0, 2, 5]),
    burst_links=st.sampled_from([2, 3, 4]),
    burst_seconds=st.sampled_from([1, 2, 3]),
)
planned_click = st.tuples(
    st.integers(0, 1),  # delivery
    st.one_of(st.integers(0, 4), st.just(HONEYPOT)),  # link
    st.integers(0, 60),  # tenths of a second after T0: hits every threshold exactly
    st.sampled_from(["GET", "GET", "GET", "HEAD"]),
    st.sampled_from([False, False, False, True]),  # a prefetch header
    st.sampled_from([CHROME, CHROME, CHROME, SCANNER]),
    st.integers(0, 4),  # batch
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limits=thresholds,
    plan=st.lists(planned_click, min_size=1, max_size=24),
    by_time=st.one_of(st.none(), st.lists(st.integers(1, 60), min_size=1, max_size=4)),
    repeats=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 4)), max_size=3),
    order=st.permutations(range(5)),
    together=st.lists(st.sampled_from([True, True, False]), min_size=5, max_size=5),
    aggregate_after=st.sets(st.integers(0, 4)),
)
# The review's two cases, and a burst that reclassifies a click already in the rollups.
@example(
    limits=Thresholds(min_seconds_after_delivery=0),
    plan=[(0, 1, 0, "GET", False, CHROME, 0), (0, 2, 5, "GET", False, CHROME, 0)]
    + [(0, 3, 14, "GET", False, CHROME, 0), (0, 3, 28, "GET", False, CHROME, 1)],
    by_time=None,
    repeats=[],
    order=[0, 1, 2, 3, 4],
    together=[False] * 5,
    aggregate_after={0},
)
@example(
    limits=Thresholds(min_seconds_after_delivery=0),
    plan=[(0, 1, 0, "GET", False, CHROME, 0), (0, 2, 0, "GET", False, CHROME, 0)]
    + [(0, 3, 5, "GET", False, CHROME, 1)],
    by_time=None,
    repeats=[],
    order=[0, 1, 2, 3, 4],
    together=[True] * 5,
    aggregate_after=set(),
)
@example(
    limits=Thresholds(min_seconds_after_delivery=0),
    plan=[(0, 1, 0, "GET", False, CHROME, 0), (0, 2, 5, "GET", False, CHROME, 1)]
    + [(0, 3, 10, "GET", False, CHROME, 1), (1, 1, 0, "GET", False, CHROME, 0)],
    by_time=None,
    repeats=[],
    order=[0, 1, 2, 3, 4],
    together=[False] * 5,
    aggregate_after={0},
)
def test_stored_flags_and_reliable_rollups_never_depend_on_batching(
    make_workspace, limits, plan, by_time, repeats, order, together, aggregate_after
):
    # Sent a second before the clicks start: too-soon verdicts come and go with the
    # threshold too.
    world = World(make_workspace, limits, people=2, lead=timedelta(seconds=1))
    clicks = [Click(n + 1, *spec[:6]) for n, spec in enumerate(plan)]
    batches = defaultdict(list)
    for click, spec in zip(clicks, plan, strict=True):
        # Either any batch, or cut by time (`by_time`: where the cuts are), as a tracker
        # rotating its file every second makes them: short spans, ingested in any order.
        batch = spec[6] if by_time is None else bisect.bisect(sorted(by_time), spec[2])
        batches[batch].append(click)
    for index, batch in repeats:  # at-least-once: an event in a second batch too
        if index < len(clicks):
            batches[batch].append(clicks[index])

    steps = [b for b in order if batches[b]]
    position = 0
    while position < len(steps):
        batch = steps[position]
        if together[batch] and position + 1 < len(steps):
            following = steps[position + 1]
            ingest_at_once(spool_of(world, batches[batch]), spool_of(world, batches[following]))
            done = {batch, following}
            position += 2
        else:
            ingest_spool(spool_of(world, batches[batch]))
            done = {batch}
            position += 1
        if done & aggregate_after:
            aggregate()
    aggregate()

    expected = expected_reasons(world, clicks)
    assert stored_reasons(world) == expected
    with scopes_disabled():
        for event in ClickEvent.objects.filter(workspace=world.workspace):
            assert event.reliable == (event.reason == "")
            assert event.at == {c.event_id: c.at for c in clicks}[event.event_id.hex]
    assert reliable_link_counts(world) == recount(world, clicks, expected)


def reliable_link_counts(world: World) -> dict[int, tuple[int, int]]:
    """What the click map shows: (total, unique) reliable clicks per link."""
    with scope(workspace=world.workspace):
        scope_ = metrics.Scope(world.workspace, campaign_id=world.campaign.pk, reliable_only=True)
        counts = metrics.link_counts(scope_)
    return {link: n for link, n in counts.items() if n != (0, 0)}


def recount(world: World, clicks: list[Click], reasons: dict[str, str]):
    """The same from the classifier's verdicts, by hand: every reliable click on a link,
    and the customers (one delivery each) who made one."""
    totals, people = defaultdict(int), defaultdict(set)
    for click in {c.event_id: c for c in clicks}.values():
        if click.link != HONEYPOT and reasons[click.event_id] == "":
            link = world.links[click.link]
            totals[link] += 1
            people[link].add(click.delivery)
    return {link: (totals[link], len(people[link])) for link in totals}
