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
import html
import logging
import re
import smtplib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import make_msgid, parseaddr
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


def audience(campaign: Campaign, segment=...):
    """Customers a send of the campaign goes to: its segment (or everyone), with an email
    address, never unsubscribed. `segment` overrides the campaign's (None: everyone)."""
    segment = campaign.segment if segment is ... else segment
    customers = segment_customers(segment) if segment is not None else Customer.objects.all()
    return customers.filter(unsubscribed_at__isnull=True).exclude(email="")


def drop_stale_queued(node: EmailNode) -> int:
    """Delete the node's queued deliveries whose customer is no longer in the audience
    (unsubscribed meanwhile, or the audience changed since a stopped send planned them):
    a send mails exactly its audience as it is when it runs. Queued rows never reached
    the SMTP server, so nothing of them was sent or counted. Returns how many went."""
    stale = Delivery.objects.filter(node=node, status=Delivery.Status.QUEUED).exclude(
        customer_id__in=audience(node.campaign).values("pk")
    )
    return stale.delete()[1].get(Delivery._meta.label, 0)


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
    Its renders (HTML, AMP, subject, preheader) share one budget."""
    delivery_id = delivery.pk
    unsubscribe_url = tracker.unsubscribe_url(delivery_id)
    return compose_message(
        node=delivery.node,
        variant=delivery.variant,
        version=delivery.template_version,
        fmt=delivery.format,
        customer=delivery.customer,
        to=delivery.customer.email,
        unsubscribe_url=unsubscribe_url,
        click_url=lambda link_id, url: tracker.click_url(delivery_id, link_id, url),
        markup=lambda body: _with_tracking_markup(body, tracker, delivery_id),
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Clickmap-Delivery": str(delivery_id),
        },
    )


def compose_message(
    *,
    node: EmailNode,
    variant,
    version: TemplateVersion,
    fmt: str,
    customer: Customer | None,
    to: str,
    unsubscribe_url: str,
    click_url=None,
    markup=None,
    headers: dict | None = None,
    subject_prefix: str = "",
) -> EmailMultiAlternatives:
    """One message of `variant` personalised for `customer` (None: no attributes), with
    the node's sender name, Reply-To and preheader. `click_url(link_id, url)` gives a
    link's tracked URL (None keeps the destination); `markup(body)` adds tracking markup
    (the open pixel…). Raises PersonaliseError."""
    context = customer_context(customer) if customer is not None else {"customer": {}}
    context["unsubscribe_url"] = unsubscribe_url
    budget = RenderBudget()
    source = _prepared(version.pk, "html", version.content_hash)
    body = render(source, context, click_url, budget=budget)
    if markup:
        body = markup(body)
    preheader = render_subject(node.preheader, context, budget=budget) if node.preheader else ""
    body = with_preheader(body, preheader)
    subject = subject_prefix + render_subject(variant.subject, context, budget=budget)
    message = EmailMultiAlternatives(
        subject=subject,
        body=html_to_text(body),
        from_email=sender_address(node),
        to=[to],
        reply_to=[node.reply_to] if node.reply_to else None,
        headers={
            "Message-ID": make_msgid(domain=settings.EMAIL_MESSAGE_ID_DOMAIN),
            **(headers or {}),
        },
    )
    if fmt == "amp" and version.amp_html:
        amp_source = _prepared(version.pk, "amp", version.content_hash)
        amp = render(amp_source, context, click_url, budget=budget)
        message.attach_alternative(amp, "text/x-amp-html")  # AMP before HTML, as required
    message.attach_alternative(body, "text/html")
    return message


def sender_address(node: EmailNode) -> str:
    """The From header: the node's address (or the default sender) with its display name
    (the node's sender name, else the one the address came with)."""
    name, address = parseaddr(node.from_email or settings.DEFAULT_FROM_EMAIL)
    # Unencoded (quoted when needed): Django encodes a non-ASCII name when it sends.
    return str(Address(display_name=node.from_name or name, addr_spec=address))


# Hidden in every client (Outlook needs mso-hide); the padding of zero-width joiners and
# spaces keeps the body's first words out of the inbox preview after a short preheader.
_PREHEADER = (
    '<span class="preheader" style="display:none !important;visibility:hidden;mso-hide:all;'
    "font-size:1px;line-height:1px;color:transparent;max-height:0;max-width:0;opacity:0;"
    'overflow:hidden">{text}{padding}</span>'
)
_PREHEADER_PADDING = "&#847;&zwnj;&nbsp;" * 60


def with_preheader(body: str, preheader: str) -> str:
    """`body` with the preheader as the first thing in <body> (clients take the preview
    text from the first text of the body). Unchanged when the preheader is empty."""
    if not preheader:
        return body
    span = _PREHEADER.format(text=html.escape(preheader), padding=_PREHEADER_PADDING)
    opened = _BODY_OPEN.search(body)
    return body[: opened.end()] + span + body[opened.end() :] if opened else span + body


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
    drop_stale_queued(node)
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
    """Send every email node of a campaign. Idempotent.

    One run at a time per campaign; it first recovers what a stopped or crashed run
    left in 'sending' (``recover_interrupted``): nobody gets a message twice, and
    every message that never reached the SMTP server is sent.

    The campaign's status follows what happened: sending while this runs, then sent, or
    failed (with ``send_error``) when the run stopped on an error or no delivery of the
    campaign reached the SMTP server and some failed. A worker's soft time limit leaves
    it sending: the continuation goes on.
    """
    if not campaign.nodes.exists():
        raise ValueError(f"“{campaign.name}” has no email to send.")
    with _send_lock(campaign) as lock_key:
        resumed, skipped = recover_interrupted(campaign)
        total = SendReport(skipped=skipped, resumed=resumed)
        _set_status(campaign, Campaign.Status.SENDING)
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
        except SoftTimeLimitExceeded:
            progress_log.stopped()
            raise
        except BaseException as error:
            progress_log.stopped()
            _set_status(campaign, Campaign.Status.FAILED, f"{type(error).__name__}: {error}")
            raise
        counts = send_progress(campaign)
        if counts["sent"] + counts["delivered"] == 0 and counts["failed"] > 0:
            _set_status(
                campaign,
                Campaign.Status.FAILED,
                f"All {counts['failed']} deliveries failed; the first: "
                + (total.errors[0] if total.errors else "see the deliveries"),
            )
        else:
            _set_status(campaign, Campaign.Status.SENT)
        progress_log.finished()
        return total


def _set_status(campaign: Campaign, status: str, error: str = "") -> None:
    Campaign.objects.filter(pk=campaign.pk).update(status=status, send_error=error[:2000])
    campaign.status, campaign.send_error = status, error[:2000]


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
