"""Sending: plan deliveries, personalise, track links, send through SMTP.

Idempotent by construction: a Delivery is unique per (node, customer) and moves
queued → sending → sent | failed. A run only sends rows it moved from queued to
sending itself, and one run at a time sends a campaign, so running a send twice (or
two at once) never mails a customer twice.

Each delivery is personalised first; any error there (a template error, the render
budget, a RecursionError, anything) fails that delivery alone. Then ``handed_over_at``
is committed, the message goes to the SMTP server, and the row becomes sent (or
failed with the server's answer). A run that dies leaves rows in "sending"; the next
run resends those without ``handed_over_at`` (they never reached the server) and
marks failed, never resent, those with it: the crash came while the server was taking
the message, which may have left.

The tracker that turns links into tracking URLs is configured by the LINK_TRACKER
setting (default ``tracking.links.SignedTracker``), as EMAIL_BACKEND is for mail,
so this module does not depend on the tracking app.
"""

import hashlib
import logging
import re
import smtplib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import make_msgid
from functools import lru_cache

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.module_loading import import_string

from campaigns import telemetry
from campaigns.models import Campaign, Customer, Delivery, EmailNode, TemplateLink, TemplateVersion
from campaigns.personalise import customer_context, render, render_subject, tracked_source
from campaigns.plaintext import html_to_text
from campaigns.render_budget import RenderBudget
from campaigns.segments import segment_customers

log = logging.getLogger(__name__)

BATCH_SIZE = 200
# Without PostgreSQL a send holds a cache lock while it runs (refreshed every batch); it
# expires this long after a crash.
LOCK_SECONDS = 600
# pg_advisory_lock(SEND_LOCK, campaign id): the session lock of the run sending a campaign.
SEND_LOCK = 0x73656E64  # "send"
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


@dataclass
class SendReport:
    planned: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # interrupted earlier while the SMTP server was taking them
    resumed: int = 0  # interrupted earlier before reaching the SMTP server: sent now
    errors: list[str] = field(default_factory=list)


def get_tracker():
    return import_string(settings.LINK_TRACKER)()


def audience(campaign: Campaign):
    """Customers the campaign goes to: its segment (or everyone), with an email address,
    not unsubscribed."""
    customers = (
        segment_customers(campaign.segment) if campaign.segment_id else Customer.objects.all()
    )
    return customers.filter(unsubscribed_at__isnull=True).exclude(email="")


def _bucket(node_id: int, customer_id: int) -> bytes:
    return hashlib.blake2b(f"{node_id}:{customer_id}".encode(), digest_size=8).digest()


def plan_deliveries(node: EmailNode) -> int:
    """Create the queued deliveries of `node` that do not exist yet; returns how many.

    Variants are split by weight: customers ordered by a stable hash take the
    variants' weighted pattern in turn, so the split is exact to within one pattern.
    """
    variants = list(node.variants.order_by("name"))
    if not variants:
        raise ValueError(f"Email “{node.name}” has no variant to send.")
    pattern = [v for v in variants for _ in range(v.weight)]
    if not pattern:
        raise ValueError(f"Every variant of “{node.name}” has weight 0.")
    done = Delivery.objects.filter(node=node).values_list("customer_id", flat=True)
    todo = audience(node.campaign).exclude(pk__in=done).values_list("pk", flat=True)
    offset = Delivery.objects.filter(node=node).count()
    ids = sorted(todo, key=lambda pk: _bucket(node.pk, pk))
    rows = [
        Delivery(
            workspace_id=node.campaign.workspace_id,
            node=node,
            variant=(variant := pattern[(offset + i) % len(pattern)]),
            customer_id=pk,
            template_version_id=variant.template_version_id,
            format=variant.format,
        )
        for i, pk in enumerate(ids)
    ]
    Delivery.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    if rows:  # counted once the rows are there for good
        transaction.on_commit(lambda: telemetry.QUEUED.inc(len(rows)))
    return len(rows)


@lru_cache(maxsize=32)
def _prepared(version_id: int, fmt: str, content_hash: str) -> str:
    """The version's source for `fmt` with trackable links wrapped (cached per version)."""
    version = TemplateVersion.objects.with_scopes_disabled().get(pk=version_id)
    source = version.amp_html if fmt == "amp" else version.html
    link_ids: dict[int, int] = {}
    links = TemplateLink.objects.with_scopes_disabled().filter(
        version_id=version_id, format=fmt, trackable=True, source_index__gte=0
    )
    for source_index, link_id in links.order_by("ordinal").values_list("source_index", "pk"):
        link_ids.setdefault(source_index, link_id)  # browser clones share one source tag
    return tracked_source(source, link_ids)


def build_message(delivery: Delivery, tracker) -> EmailMultiAlternatives:
    """The personalised, tracked message for one delivery. Raises PersonaliseError.
    Its renders (HTML, AMP, subject) share one budget."""
    version = delivery.template_version
    customer = delivery.customer
    context = customer_context(customer)
    unsubscribe_url = tracker.unsubscribe_url(delivery.pk)
    context["unsubscribe_url"] = unsubscribe_url
    budget = RenderBudget()

    def click_url(link_id: int, url: str) -> str | None:
        return tracker.click_url(delivery.pk, link_id, url)

    source = _prepared(version.pk, "html", version.content_hash)
    body = render(source, context, click_url, budget=budget)
    body = _with_tracking_markup(body, tracker, delivery.pk)
    subject = render_subject(delivery.variant.subject, context, budget=budget)
    node = delivery.node
    message = EmailMultiAlternatives(
        subject=subject,
        body=html_to_text(body),
        from_email=node.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[customer.email],
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Message-ID": make_msgid(domain=settings.EMAIL_MESSAGE_ID_DOMAIN),
            "X-Clickmap-Delivery": str(delivery.pk),
        },
    )
    if delivery.format == "amp" and version.amp_html:
        amp_source = _prepared(version.pk, "amp", version.content_hash)
        amp = render(amp_source, context, click_url, budget=budget)
        message.attach_alternative(amp, "text/x-amp-html")  # AMP before HTML, as required
    message.attach_alternative(body, "text/html")
    return message


def _with_tracking_markup(body: str, tracker, delivery_id: int) -> str:
    """Add the invisible honeypot link after <body> and the open pixel before </body>."""
    honeypot = (
        f'<a href="{tracker.honeypot_url(delivery_id)}" aria-hidden="true" tabindex="-1" '
        'style="display:none !important;font-size:0;line-height:0;max-height:0;'
        'overflow:hidden;mso-hide:all">&#8203;</a>'
    )
    pixel = (
        f'<img src="{tracker.open_url(delivery_id)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    opened = _BODY_OPEN.search(body)
    body = body[: opened.end()] + honeypot + body[opened.end() :] if opened else honeypot + body
    closing = body.lower().rfind("</body")
    return body[:closing] + pixel + body[closing:] if closing >= 0 else body + pixel


def _claim(node: EmailNode, limit: int) -> list[int]:
    """Move up to `limit` queued deliveries to sending; only this run sends them."""
    with transaction.atomic():
        ids = list(
            Delivery.objects.filter(node=node, status=Delivery.Status.QUEUED)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        Delivery.objects.filter(pk__in=ids, status=Delivery.Status.QUEUED).update(
            status=Delivery.Status.SENDING
        )
    return ids


def send_node(
    node: EmailNode,
    *,
    batch_size: int = BATCH_SIZE,
    progress=None,
    lock_key=None,
    progress_log: "ProgressLog | None" = None,
) -> SendReport:
    """Send every queued delivery of `node` (planning them first). Idempotent.

    Deliveries this run claimed but had not handed over when it stops (an SMTP server
    that cannot be reached, a worker's soft time limit) go back to the queue.
    `progress_log` is told after every delivery (it logs every few seconds)."""
    report = SendReport(planned=plan_deliveries(node))
    tracker = get_tracker()
    while ids := _claim(node, batch_size):
        if lock_key:
            cache.touch(lock_key, LOCK_SECONDS)
        deliveries = Delivery.objects.filter(pk__in=ids).select_related(
            "customer", "variant", "template_version", "node"
        )
        try:
            smtp = get_connection()
            _open(smtp)
            try:
                for delivery in deliveries:
                    if not _send_one(delivery, tracker, smtp, report):
                        _reconnect(smtp)
                    if progress_log:
                        progress_log.tick(report)
            except BaseException:
                _abort(smtp)  # stopping: never wait on the server to say goodbye
                raise
            smtp.close()
        finally:
            _requeue_unsent(ids)
        if progress:
            progress(report)
    return report


def _open(smtp) -> None:
    try:
        smtp.open()
    except OSError as error:
        raise SmtpUnavailable(f"The SMTP server cannot be reached: {error}") from error


def _reconnect(smtp) -> None:
    """A new connection after the server dropped (or timed out) the last one."""
    _abort(smtp)
    _open(smtp)


def _abort(smtp) -> None:
    """Drop the SMTP connection without the QUIT exchange, which waits on the server."""
    connection = getattr(smtp, "connection", None)
    if connection is not None and hasattr(connection, "close"):
        connection.close()
        smtp.connection = None
    smtp.close()


def _requeue_unsent(ids: list[int]) -> None:
    """Put back the claimed deliveries that never reached the SMTP server."""
    try:
        Delivery.objects.filter(
            pk__in=ids, status=Delivery.Status.SENDING, handed_over_at__isnull=True
        ).update(status=Delivery.Status.QUEUED)
    except DatabaseError:  # the next run's recover_interrupted puts them back
        log.exception("Could not requeue %s claimed deliveries", len(ids))


class SmtpUnavailable(RuntimeError):
    """The SMTP server refused the connection; the deliveries stay queued."""


def _send_one(delivery: Delivery, tracker, smtp, report: SendReport) -> bool:
    """Personalise and send one delivery; whatever goes wrong fails this delivery only.
    A worker's soft time limit passes through (the delivery is then requeued, or left
    to recover_interrupted when it was being handed over). Returns False when the SMTP
    connection may be unusable after a failure (a drop, a timeout): not for the next."""
    try:
        message = build_message(delivery, tracker)
        message.message()  # header problems (line breaks in an address…) fail it here
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:  # one customer's failure is that delivery's alone
        _failed(delivery, error, report)
        return True
    delivery.handed_over_at = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(handed_over_at=delivery.handed_over_at)
    # From here until the row says sent or failed, a crash leaves it undecidable: the
    # server may have taken the message. recover_interrupted never resends it.
    message.connection = smtp
    try:
        message.send()
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:  # SMTP refusals are OSErrors; anything else fails it too
        _failed(delivery, error, report)
        # After the server's answer (a refused recipient…) the session goes on.
        return isinstance(error, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused)
    delivery.status = Delivery.Status.SENT
    delivery.sent_at = timezone.now()
    delivery.message_id = message.extra_headers["Message-ID"]
    report.sent += 1
    delivery.save(update_fields=["status", "error", "sent_at", "message_id"])
    telemetry.SENT.inc()
    return True


def _failed(delivery: Delivery, error: Exception, report: SendReport) -> None:
    delivery.status = Delivery.Status.FAILED
    delivery.error = f"{type(error).__name__}: {error}"[:2000]
    report.failed += 1
    if len(report.errors) < 20:
        report.errors.append(f"{delivery.customer}: {delivery.error}")
    log.warning("delivery %s failed: %s", delivery.pk, delivery.error)
    delivery.save(update_fields=["status", "error"])
    telemetry.FAILED.inc()


INTERRUPTED_WHILE_HANDED_OVER = (
    "Interrupted while the SMTP server was taking it: it may have been sent, so it is "
    "not sent again."
)


def recover_interrupted(campaign: Campaign) -> tuple[int, int]:
    """Deliveries a stopped or crashed run left in 'sending': those it never handed to
    the SMTP server go back to the queue (this run sends them), those it did are marked
    failed and never resent (the message may have left). Returns (requeued, failed).
    Only safe while holding the campaign's send lock."""
    interrupted = Delivery.objects.filter(node__campaign=campaign, status=Delivery.Status.SENDING)
    requeued = interrupted.filter(handed_over_at__isnull=True).update(status=Delivery.Status.QUEUED)
    failed = interrupted.filter(handed_over_at__isnull=False).update(
        status=Delivery.Status.FAILED, error=INTERRUPTED_WHILE_HANDED_OVER
    )
    telemetry.FAILED.inc(failed)
    return requeued, failed


class SendInProgress(RuntimeError):
    """Another run is sending this campaign right now."""


@contextmanager
def _send_lock(campaign: Campaign):
    """One run at a time per campaign. On PostgreSQL a session advisory lock, which the
    server releases the moment a crashed run's connection goes, so a rerun can start at
    once; elsewhere a cache entry, refreshed every batch, that expires after a crash.
    Yields the cache key to refresh (None on PostgreSQL)."""
    busy = SendInProgress(f"“{campaign.name}” is being sent by another run.")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [SEND_LOCK, campaign.pk])
            if not cursor.fetchone()[0]:
                raise busy
        try:
            yield None
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [SEND_LOCK, campaign.pk])
        return
    lock_key = f"clickmap:send-campaign:{campaign.pk}"
    if not cache.add(lock_key, 1, LOCK_SECONDS):
        raise busy
    try:
        yield lock_key
    finally:
        cache.delete(lock_key)


def send_campaign(campaign: Campaign, *, progress=None) -> SendReport:
    """Send every email node of a campaign; the campaign ends 'sent'. Idempotent.

    One run at a time per campaign; it first recovers what a stopped or crashed run
    left in 'sending' (``recover_interrupted``): nobody gets a message twice, and
    every message that never reached the SMTP server is sent.
    """
    if not campaign.nodes.exists():
        raise ValueError(f"“{campaign.name}” has no email to send.")
    with _send_lock(campaign) as lock_key:
        resumed, skipped = recover_interrupted(campaign)
        total = SendReport(skipped=skipped, resumed=resumed)
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
        progress_log = ProgressLog(campaign)
        try:
            for node in campaign.nodes.order_by("position"):
                report = send_node(
                    node, progress=progress, lock_key=lock_key, progress_log=progress_log
                )
                total.planned += report.planned
                total.sent += report.sent
                total.failed += report.failed
                total.errors += report.errors
                progress_log.node_done(report)
        except BaseException:
            progress_log.stopped()
            raise
        Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENT)
        progress_log.finished()
        return total


class ProgressLog:
    """A send's log: a line when it starts, one every settings.SEND_PROGRESS_SECONDS
    while it runs (sent, failed, left to send, rate), one when it ends or stops. Each
    carries its numbers as fields (clickmap/log_format.py writes them key=value)."""

    def __init__(self, campaign: Campaign, clock=time.monotonic):
        self.campaign, self.clock = campaign, clock
        self.every = settings.SEND_PROGRESS_SECONDS
        self.started = self.logged = clock()
        self.sent = self.failed = 0  # of the nodes already done
        self.node_sent = self.node_failed = 0
        self._log(logging.INFO, "send started", left=None)  # planned by each node's send

    def tick(self, report: SendReport) -> None:
        self.node_sent, self.node_failed = report.sent, report.failed
        now = self.clock()
        if now - self.logged >= self.every:
            self.logged = now
            self._log(logging.INFO, "send progress", left=self._left())

    def node_done(self, report: SendReport) -> None:
        self.sent += report.sent
        self.failed += report.failed
        self.node_sent = self.node_failed = 0

    def finished(self) -> None:
        self._log(logging.INFO, "send finished", left=0)

    def stopped(self) -> None:
        # A soft time limit or a lost server: its continuation or a retry goes on.
        try:
            left = self._left()
        except DatabaseError:  # the database may be why it stopped
            left = -1
        self._log(logging.WARNING, "send stopped", left=left)

    def _left(self) -> int:
        return Delivery.objects.filter(
            node__campaign=self.campaign,
            status__in=[Delivery.Status.QUEUED, Delivery.Status.SENDING],
        ).count()

    def _log(self, level: int, message: str, left: int | None) -> None:
        seconds = self.clock() - self.started
        sent = self.sent + self.node_sent
        fields = {
            "campaign": self.campaign.pk,
            "workspace": self.campaign.workspace_id,
            "sent": sent,
            "failed": self.failed + self.node_failed,
            "seconds": round(seconds, 1),
            "per_second": round(sent / seconds, 1) if seconds > 0 else 0.0,
        }
        if left is not None:
            fields["left"] = left
        log.log(level, message, extra={"fields": fields})


def send_progress(campaign: Campaign) -> dict[str, int]:
    """Delivery counts by status, for the campaign page."""
    counts = {status: 0 for status in Delivery.Status.values}
    rows = (
        Delivery.objects.filter(node__campaign=campaign)
        .values_list("status")
        .order_by()
        .annotate(n=Count("pk"))
    )
    for status, n in rows:
        counts[status] = n
    counts["total"] = sum(counts.values())
    return counts
