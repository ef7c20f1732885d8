"""Starting, scheduling and cancelling a campaign's send; its audience and its count.

The campaign's status is a state machine that only these functions and the send itself
(campaigns/sending.py) move, each with one conditional UPDATE, so two requests, beats or
workers racing on one campaign never both win:

    draft / sent / failed / cancelled ──start──▶ sending ──▶ sent | failed
    draft / sent / failed / cancelled ──schedule──▶ scheduled ──due (beat)──▶ sending
    scheduled ──cancel──▶ cancelled            scheduled ──start──▶ sending

A scheduled send is started by beat's periodic `start_due_sends`, which claims the due
rows with FOR UPDATE SKIP LOCKED and queues each send in the same transaction: two beats
(or workers) at once start each send once, and a send queued twice mails nobody twice
(sending is idempotent). The send task first locks the campaign's row, so it
waits for the transaction that queued it and runs only if that committed "sending": a
crash between queueing and commit leaves the campaign scheduled for the next beat,
never sending without a task.
"""

import zoneinfo
from datetime import date, datetime, time

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Delivery, Segment
from campaigns.sending import audience

STARTABLE = (
    Campaign.Status.DRAFT,
    Campaign.Status.SENT,
    Campaign.Status.FAILED,
    Campaign.Status.CANCELLED,
)


class ScheduleError(ValueError):
    """A send that cannot be started, scheduled or cancelled now: the message says why."""


def recipient_count(campaign: Campaign, segment: Segment | None = ...) -> int:
    """How many customers a send started now would mail: those of the audience missing
    a delivery that left the queue in at least one of the campaign's emails (a campaign
    sent before goes only to its new customers; queued deliveries of a stopped send are
    sent, and those of customers no longer in the audience dropped: sending.py)."""
    people = audience(campaign, segment)
    nodes = list(campaign.nodes.values_list("pk", flat=True))
    if not nodes:
        return 0
    left = Delivery.objects.filter(node_id__in=nodes).exclude(status=Delivery.Status.QUEUED)
    if len(nodes) == 1:
        return people.exclude(pk__in=left.values("customer_id")).count()
    # A customer whose every email left the queue has nothing coming.
    complete = left.values("customer_id").order_by().annotate(n=Count("pk")).filter(n=len(nodes))
    return people.exclude(pk__in=complete.values("customer_id")).count()


def local_to_utc(day: date, at: time, zone_name: str) -> datetime:
    """The instant of wall-clock `day` `at` in the zone, in UTC. A time that the zone
    skips (clocks going forward) is refused; one it repeats (clocks going back) is the
    first of the two, as calendars read it."""
    zone = zoneinfo.ZoneInfo(zone_name)
    local = datetime.combine(day, at).replace(tzinfo=zone, fold=0)
    utc = local.astimezone(zoneinfo.ZoneInfo("UTC"))
    if utc.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ScheduleError(
            f"{day:%-d %b %Y} {at:%H:%M} does not exist in {zone_name} (the clocks go "
            "forward then): choose another time."
        )
    return utc


def in_zone(instant: datetime, zone_name: str) -> datetime:
    return instant.astimezone(zoneinfo.ZoneInfo(zone_name))


def local_text(instant: datetime, zone_name: str) -> str:
    """The instant as the workspace reads it: "Monday 7 December 2026, 09:00 Europe/Berlin".
    Formatted here: templates' date filter would convert it to the server's zone."""
    return f"{in_zone(instant, zone_name):%A %-d %B %Y, %H:%M} {zone_name}"


def _move(campaign: Campaign, allowed, **changes) -> bool:
    """Move the campaign from one of `allowed` statuses, atomically; False when its
    status was another (someone else moved it first)."""
    moved = Campaign.objects.filter(pk=campaign.pk, status__in=allowed).update(
        **changes, updated_at=timezone.now()
    )
    if moved:
        for name, value in changes.items():
            setattr(campaign, name, value)
    return bool(moved)


def _check_sendable(campaign: Campaign) -> None:
    if not campaign.nodes.filter(variants__isnull=False).exists():
        raise ScheduleError("Add an email variant before sending.")


def send_start(campaign: Campaign, *, segment: Segment | None = ...) -> None:
    """Start sending now (to `segment` when given: None is everyone subscribed): the
    campaign becomes sending and its send task is queued once this commits."""
    _check_sendable(campaign)
    changes = {"status": Campaign.Status.SENDING, "scheduled_at": None, "send_error": ""}
    if segment is not ...:
        changes["segment"] = segment
    with transaction.atomic():
        if not _move(campaign, (*STARTABLE, Campaign.Status.SCHEDULED), **changes):
            raise ScheduleError(_busy(campaign))
        _queue_send(campaign.pk)


def send_schedule(campaign: Campaign, at: datetime, *, segment: Segment | None = ...) -> None:
    """Schedule the send at `at` (aware; in the future). A scheduled campaign can be
    scheduled again (another time or audience) until it starts."""
    _check_sendable(campaign)
    if at <= timezone.now():
        raise ScheduleError("Choose a time in the future.")
    changes = {"status": Campaign.Status.SCHEDULED, "scheduled_at": at, "send_error": ""}
    if segment is not ...:
        changes["segment"] = segment
    if not _move(campaign, (*STARTABLE, Campaign.Status.SCHEDULED), **changes):
        raise ScheduleError(_busy(campaign))


def send_resume(campaign: Campaign) -> None:
    """Queue the send task again for a campaign that says sending: a worker killed at its
    hard time limit (or lost) leaves it so. Harmless while a run is alive: that run holds
    the campaign's send lock and the new one stops at once (SendInProgress)."""
    with transaction.atomic():
        moved = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENDING)
        if not moved.select_for_update(of=("self",), no_key=True).exists():
            raise ScheduleError(_busy(campaign))
        _queue_send(campaign.pk)


def send_cancel(campaign: Campaign) -> None:
    """Cancel a scheduled send that has not started; ScheduleError once it has."""
    if not _move(campaign, (Campaign.Status.SCHEDULED,), status=Campaign.Status.CANCELLED):
        raise ScheduleError(_busy(campaign))


def _busy(campaign: Campaign) -> str:
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
    campaign.status = status or campaign.status
    if status == Campaign.Status.SENDING:
        return "The send has started already: it cannot be changed or cancelled now."
    if status == Campaign.Status.ARCHIVED:
        return "An archived campaign is not sent."
    return f"The campaign is {Campaign.Status(status).label.lower()} now; nothing was changed."


def start_due_sends(now: datetime | None = None) -> list[int]:
    """Start every scheduled send that is due (celery beat runs this every few seconds).
    Returns the campaign ids it started. Idempotent under concurrent runs: each due row
    is claimed by one run (SKIP LOCKED), moved to sending and its task queued in that
    run's transaction; a row another run holds is skipped, and once moved it is no
    longer scheduled."""
    now = now or timezone.now()
    with scopes_disabled(), transaction.atomic():
        due = list(
            Campaign.objects.filter(status=Campaign.Status.SCHEDULED, scheduled_at__lte=now)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        if due:
            Campaign.objects.filter(pk__in=due, status=Campaign.Status.SCHEDULED).update(
                status=Campaign.Status.SENDING, updated_at=now
            )
            for pk in due:
                _queue_send(pk)
    return due


def _queue_send(campaign_id: int) -> None:
    """Queue the campaign's send task within the caller's transaction (the task waits
    for it: see the module docstring). Tasks run inline (no broker) run after commit."""
    from campaigns.tasks import send_campaign_task

    if send_campaign_task.app.conf.task_always_eager:
        transaction.on_commit(lambda: send_campaign_task.delay(campaign_id))
    else:
        send_campaign_task.delay(campaign_id)
