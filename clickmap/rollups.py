"""The aggregator: applies tracking's change log to the rollups (clickmap/models.py).

Each batch runs in one transaction: take change rows (skipping rows another worker
holds), recompute every touched pair and recipient from the raw events, apply the
differences to the per-link and per-email counters, delete the change rows. So:

- exact: a pair's contribution is recomputed from all its raw events, never patched;
- idempotent: a change applied twice recomputes the same values, adds nothing;
- safe with several workers: rows are locked in one global order (pairs, recipients,
  link counters, email counters), and a killed worker's transaction rolls back whole;
- incremental: the cost follows the changed pairs, not the history.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django_scopes import scopes_disabled

from campaigns.models import Delivery, Workspace
from clickmap.models import (
    EmailRollup,
    LinkRollup,
    PairDayRollup,
    PairRollup,
    RecipientRollup,
)
from tracking.models import ClickEvent, EventChange, OpenEvent

BATCH_SIZE = 2000
COUNTERS = ("total_all", "total_rel", "window_all", "window_rel")


@dataclass
class AggregateReport:
    changes: int = 0
    pairs: int = 0
    recipients: int = 0
    batches: int = 0


def aggregate(batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> AggregateReport:
    """Apply the change log until it is empty (or `max_batches` were applied)."""
    report = AggregateReport()
    with scopes_disabled():
        while max_batches is None or report.batches < max_batches:
            if not apply_batch(batch_size, report):
                break
            report.batches += 1
    return report


@transaction.atomic
def apply_batch(batch_size: int, report: AggregateReport) -> int:
    """Apply up to `batch_size` change rows in one transaction; returns how many."""
    changes = list(
        EventChange.objects.select_for_update(skip_locked=True)
        .order_by("id")
        .values_list("id", "kind", "delivery_id", "link_id")[:batch_size]
    )
    if not changes:
        return 0
    deliveries = {
        pk: (workspace_id, variant_id, customer_id)
        for pk, workspace_id, variant_id, customer_id in Delivery.objects.filter(
            pk__in={c[2] for c in changes}
        ).values_list("pk", "workspace_id", "variant_id", "customer_id")
    }
    pairs = {}  # (variant, link, customer) -> (workspace, delivery)
    recipients = {}  # (variant, customer) -> (workspace, delivery)
    for _, kind, delivery_id, link_id in changes:
        if delivery_id not in deliveries:
            continue  # the delivery was deleted with its events
        workspace_id, variant_id, customer_id = deliveries[delivery_id]
        recipients[(variant_id, customer_id)] = (workspace_id, delivery_id)
        if kind == EventChange.Kind.CLICK and link_id:
            pairs[(variant_id, link_id, customer_id)] = (workspace_id, delivery_id)
    _recompute_pairs(pairs)
    _recompute_recipients(recipients)
    EventChange.objects.filter(pk__in=[c[0] for c in changes]).delete()
    report.changes += len(changes)
    report.pairs += len(pairs)
    report.recipients += len(recipients)
    return len(changes)


def _window_hours() -> dict[int, int]:
    return dict(Workspace.objects.values_list("pk", "unique_window_hours"))


def pair_contribution(events, window_hours: int):
    """A pair's counters from its click events, in time order: (totals, by (day, device)).

    events: (at, reliable, device) sorted by time. A click is *counted* in window mode
    when no counted click of the pair lies within `window_hours` before it (0: only the
    first click counts); reliable-only counts chain over reliable clicks alone.
    """
    window = timedelta(hours=window_hours) if window_hours else None
    totals = dict.fromkeys(COUNTERS, 0)
    by_day = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    last_all = last_rel = None
    for at, reliable, device in events:
        cell = by_day[(at.date(), device)]
        counted_all = last_all is None or (window is not None and at >= last_all + window)
        if counted_all:
            last_all = at
        counted_rel = False
        if reliable:
            counted_rel = last_rel is None or (window is not None and at >= last_rel + window)
            if counted_rel:
                last_rel = at
        for name, add in (
            ("total_all", 1),
            ("total_rel", reliable),
            ("window_all", counted_all),
            ("window_rel", counted_rel),
        ):
            totals[name] += add
            cell[name] += add
    return totals, by_day


def _recompute_pairs(pairs: dict) -> None:
    if not pairs:
        return
    keys = sorted(pairs)
    PairRollup.objects.bulk_create(
        [
            PairRollup(workspace_id=pairs[k][0], variant_id=k[0], link_id=k[1], customer_id=k[2])
            for k in keys
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    rows = {
        (r.variant_id, r.link_id, r.customer_id): r
        for r in PairRollup.objects.select_for_update()
        .filter(
            variant_id__in={k[0] for k in keys},
            link_id__in={k[1] for k in keys},
            customer_id__in={k[2] for k in keys},
        )
        .order_by("variant_id", "link_id", "customer_id")
    }
    windows = _window_hours()
    events = defaultdict(list)
    delivery_of = {pairs[k][1]: k[0] for k in keys}
    for delivery_id, link_id, at, reliable, device in (
        ClickEvent.objects.filter(delivery_id__in=delivery_of, link_id__in={k[1] for k in keys})
        .order_by("at", "id")
        .values_list("delivery_id", "link_id", "at", "reliable", "device")
    ):
        events[(delivery_id, link_id)].append((at, reliable, device))

    link_deltas = defaultdict(lambda: dict.fromkeys((*COUNTERS, "unique_all", "unique_rel"), 0))
    day_rows = []
    changed = []
    for key in keys:
        workspace_id, delivery_id = pairs[key]
        row = rows[key]
        totals, by_day = pair_contribution(events[(delivery_id, key[1])], windows[workspace_id])
        delta = link_deltas[(workspace_id, key[0], key[1])]
        for name in COUNTERS:
            delta[name] += totals[name] - getattr(row, name)
        delta["unique_all"] += (totals["total_all"] > 0) - (row.total_all > 0)
        delta["unique_rel"] += (totals["total_rel"] > 0) - (row.total_rel > 0)
        for name in COUNTERS:
            setattr(row, name, totals[name])
        changed.append(row)
        day_rows += [
            PairDayRollup(
                pair=row,
                workspace_id=workspace_id,
                variant_id=key[0],
                link_id=key[1],
                customer_id=key[2],
                day=day,
                device=device,
                **cell,
            )
            for (day, device), cell in by_day.items()
        ]
    PairRollup.objects.bulk_update(changed, COUNTERS, batch_size=1000)
    PairDayRollup.objects.filter(pair__in=changed).delete()
    PairDayRollup.objects.bulk_create(day_rows, batch_size=1000)
    _add_to_link_rollups(link_deltas)


def _add_to_link_rollups(deltas: dict) -> None:
    keys = sorted(k for k, d in deltas.items() if any(d.values()))
    LinkRollup.objects.bulk_create(
        [LinkRollup(workspace_id=w, variant_id=v, link_id=link) for w, v, link in keys],
        ignore_conflicts=True,
    )
    for workspace_id, variant_id, link_id in keys:
        delta = deltas[(workspace_id, variant_id, link_id)]
        LinkRollup.objects.filter(variant_id=variant_id, link_id=link_id).update(
            **{name: F(name) + value for name, value in delta.items() if value}
        )


def _recompute_recipients(recipients: dict) -> None:
    if not recipients:
        return
    keys = sorted(recipients)
    RecipientRollup.objects.bulk_create(
        [
            RecipientRollup(workspace_id=recipients[k][0], variant_id=k[0], customer_id=k[1])
            for k in keys
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    variants = {k[0] for k in keys}
    customers = {k[1] for k in keys}
    rows = {
        (r.variant_id, r.customer_id): r
        for r in RecipientRollup.objects.select_for_update()
        .filter(variant_id__in=variants, customer_id__in=customers)
        .order_by("variant_id", "customer_id")
    }
    clicked = defaultdict(lambda: [False, False])
    for variant_id, customer_id, total_all, total_rel in PairRollup.objects.filter(
        variant_id__in=variants, customer_id__in=customers
    ).values_list("variant_id", "customer_id", "total_all", "total_rel"):
        clicked[(variant_id, customer_id)][0] |= total_all > 0
        clicked[(variant_id, customer_id)][1] |= total_rel > 0
    delivery_key = {recipients[k][1]: k for k in keys}
    opened = defaultdict(lambda: [False, False])
    for delivery_id, reliable in OpenEvent.objects.filter(delivery_id__in=delivery_key).values_list(
        "delivery_id", "reliable"
    ):
        state = opened[delivery_key[delivery_id]]
        state[0] = True
        state[1] |= reliable

    email_deltas = defaultdict(lambda: dict.fromkeys(EMAIL_COUNTERS, 0))
    changed = []
    for key in keys:
        row = rows[key]
        new = {
            "clicked_all": clicked[key][0],
            "clicked_rel": clicked[key][1],
            "opened_all": opened[key][0],
            "opened_rel": opened[key][1],
        }
        delta = email_deltas[(recipients[key][0], key[0])]
        for flag, counter in RECIPIENT_TO_EMAIL.items():
            delta[counter] += new[flag] - getattr(row, flag)
            setattr(row, flag, new[flag])
        changed.append(row)
    RecipientRollup.objects.bulk_update(changed, list(RECIPIENT_TO_EMAIL), batch_size=1000)
    keys = sorted(k for k, d in email_deltas.items() if any(d.values()))
    EmailRollup.objects.bulk_create(
        [EmailRollup(workspace_id=w, variant_id=v) for w, v in keys], ignore_conflicts=True
    )
    for workspace_id, variant_id in keys:
        delta = email_deltas[(workspace_id, variant_id)]
        EmailRollup.objects.filter(variant_id=variant_id).update(
            **{name: F(name) + value for name, value in delta.items() if value}
        )


RECIPIENT_TO_EMAIL = {
    "clicked_all": "clickers_all",
    "clicked_rel": "clickers_rel",
    "opened_all": "openers_all",
    "opened_rel": "openers_rel",
}
EMAIL_COUNTERS = tuple(RECIPIENT_TO_EMAIL.values())


@transaction.atomic
def recompute() -> AggregateReport:
    """Rebuild every rollup from the raw events (for a changed window setting, or a check)."""
    with scopes_disabled():
        for model in (PairDayRollup, PairRollup, LinkRollup, RecipientRollup, EmailRollup):
            model.objects.all().delete()
        EventChange.objects.all().delete()
        clicks = (
            ClickEvent.objects.filter(link__isnull=False)
            .values_list("delivery_id", "link_id")
            .distinct()
        )
        EventChange.objects.bulk_create(
            [EventChange(kind="c", delivery_id=d, link_id=link) for d, link in clicks],
            batch_size=5000,
        )
        opens = OpenEvent.objects.values_list("delivery_id", flat=True).distinct()
        EventChange.objects.bulk_create(
            [EventChange(kind="o", delivery_id=d) for d in opens], batch_size=5000
        )
    return aggregate()
