"""The engagement conditions of segments: "clicked" and "opened" a campaign.

campaigns/segments.py keeps the registry of condition kinds but must not import this app
(layers run campaigns ← tracking), so this app registers the kinds that read its event
tables, from TrackingConfig.ready(). A registry rather than raw table names in a hook:
the conditions stay ORM queries (scoped to the workspace, checked by the model layer),
and a rule naming "clicked" fails loudly when tracking is not installed.
"""

from django.db.models import Q

from campaigns.models import Delivery
from campaigns.segments import ConditionKind, campaign_id_of, campaign_name, register_condition
from tracking.models import ClickEvent, OpenEvent


def _reliable_only(condition: dict) -> bool:
    # Scanner, prefetch and honeypot clicks (and machine opens) make nobody a clicker
    # (or opener) unless the condition asks for every event.
    return condition.get("reliable", True) not in (False, "false", "0", 0)


def _deliveries_with(model, condition: dict):
    events = model.objects.filter(delivery__node__campaign_id=campaign_id_of(condition))
    if _reliable_only(condition):
        events = events.filter(reliable=True)
    return events.values("delivery_id")


def clicked_q(condition: dict) -> Q:
    """Customers with a click on any link of the campaign."""
    deliveries = Delivery.objects.filter(pk__in=_deliveries_with(ClickEvent, condition))
    return Q(pk__in=deliveries.values("customer_id"))


def opened_q(condition: dict) -> Q:
    """Customers who opened the campaign; a click implies an open (docs/metrics.md), so
    a clicker whose images stayed off is an opener too."""
    opened = Delivery.objects.filter(
        Q(pk__in=_deliveries_with(OpenEvent, condition))
        | Q(pk__in=_deliveries_with(ClickEvent, condition))
    )
    return Q(pk__in=opened.values("customer_id"))


def _describe(verb: str):
    def describe(condition: dict) -> str:
        every = "" if _reliable_only(condition) else " (machine events too)"
        return f"{verb} {campaign_name(condition)}{every}"

    return describe


def register() -> None:
    register_condition(
        ConditionKind(
            name="clicked",
            label="Clicked campaign",
            build=clicked_q,
            inputs=("campaign", "reliable"),
            volatile=True,
            describe=_describe("clicked"),
        )
    )
    register_condition(
        ConditionKind(
            name="opened",
            label="Opened campaign",
            build=opened_q,
            inputs=("campaign", "reliable"),
            volatile=True,
            describe=_describe("opened"),
        )
    )
