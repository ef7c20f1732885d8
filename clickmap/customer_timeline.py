"""One customer's timeline across campaigns: deliveries, opens, clicks (which link,
reliable or not) and unsubscribes, newest first. Read from the raw events (not the
rollups), inside the customer's workspace scope."""

from dataclasses import dataclass
from datetime import datetime
from itertools import chain

from django.urls import reverse
from django.utils.http import urlencode

from campaigns.models import Customer, Delivery
from tracking.classify import Reason
from tracking.models import ClickEvent, OpenEvent, Unsubscribe

LIMIT = 200  # entries shown; the page says when there are more


@dataclass
class Entry:
    kind: str  # "delivery", "open", "click", "unsubscribe"
    at: datetime
    delivery: Delivery
    reliable: bool = True
    reason: str = ""
    device: str = ""
    link_text: str = ""
    url: str = ""
    detail: str = ""
    preview_url: str = ""  # the click map "Preview for" this customer

    @property
    def campaign(self):
        return self.delivery.node.campaign


def customer_timeline(customer: Customer, limit: int = LIMIT) -> tuple[list[Entry], bool]:
    """(the newest `limit` entries, whether older ones were left out)."""
    deliveries = {
        d.pk: d
        for d in Delivery.objects.filter(customer=customer).select_related(
            "node__campaign", "variant"
        )
    }
    if not deliveries:
        return [], False
    ids = list(deliveries)
    who = customer.email or customer.external_id
    slug = customer.workspace.slug

    def preview(delivery: Delivery) -> str:
        base = reverse("clickmap:page", args=[slug, delivery.node.campaign_id])
        query = {"node": delivery.node_id, "variant": delivery.variant_id, "for": who}
        return f"{base}?{urlencode(query)}"

    sent = [
        Entry(
            "delivery",
            d.sent_at or d.created_at,
            d,
            detail=d.get_status_display() + (f": {d.error}" if d.error else ""),
            preview_url=preview(d),
        )
        for d in deliveries.values()
    ]
    clicks = (
        ClickEvent.objects.filter(delivery_id__in=ids)
        .select_related("link")
        .order_by("-at")[: limit + 1]
    )
    opens = OpenEvent.objects.filter(delivery_id__in=ids).order_by("-at")[: limit + 1]
    unsubscribes = Unsubscribe.objects.filter(delivery_id__in=ids)
    entries = chain(
        sent,
        (
            Entry(
                "click",
                c.at,
                deliveries[c.delivery_id],
                reliable=c.reliable,
                reason=_reason(c.reason),
                device=c.get_device_display(),
                link_text=(c.link.text if c.link else "") or "",
                url=c.link.href if c.link else c.url,
                preview_url=preview(deliveries[c.delivery_id]),
            )
            for c in clicks
        ),
        (
            Entry(
                "open",
                o.at,
                deliveries[o.delivery_id],
                reliable=o.reliable,
                reason=_reason(o.reason),
                device=o.get_device_display(),
            )
            for o in opens
        ),
        (
            Entry("unsubscribe", u.at, deliveries[u.delivery_id], detail=u.get_method_display())
            for u in unsubscribes
        ),
    )
    ordered = sorted(entries, key=lambda e: e.at, reverse=True)
    return ordered[:limit], len(ordered) > limit


REASON_LABELS = {
    Reason.SCANNER_UA: "security scanner",
    Reason.BOT_UA: "bot",
    Reason.TOO_SOON: "too soon after delivery",
    Reason.HONEYPOT: "hidden trap link",
    Reason.BURST: "burst of links",
    Reason.PREFETCH: "prefetch",
    Reason.HEAD: "HEAD request",
    Reason.METHOD: "not a GET",
    Reason.APPLE_MPP: "Apple Mail privacy proxy",
    Reason.PROXY_OPEN: "image proxy",
}


def _reason(code: str) -> str:
    return REASON_LABELS.get(code, code)
