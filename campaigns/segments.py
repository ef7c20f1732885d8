"""Segment membership: a rule over customers, and/or an explicit member list.

A rule is a list of conditions that must all hold, or ``{"match": "any", "conditions":
[…]}`` for conditions of which one must hold. A condition names its kind (an attribute
condition may leave it out, as rules saved before kinds existed do) and may be negated:

    {"attribute": "country", "op": "eq", "value": "DE"}
    {"kind": "received", "campaign": 12}
    {"kind": "clicked", "campaign": 12, "negate": true}
    {"kind": "unsubscribed"}
    {"kind": "signed_up_within", "days": 30}

Kinds live in a registry (CONDITION_KINDS). This app registers those it can answer from
its own tables (attributes, received, unsubscribed, signed up); the tracking app
registers "clicked" and "opened" from its ready(), since only it knows its event tables:
campaigns never imports tracking, and a rule naming a kind nobody registered is refused.

A kind is *volatile* when membership can change without a write to the customer, the
segment or its member list (a delivery, a click, an unsubscribe, a passing day). Segment
rollups (clickmap/segment_rollups.py) follow only those writes, so a segment with a
volatile condition is always counted live (see docs/aggregation.md).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, Customer, Delivery, Segment

# Attribute operators; each maps to a lookup on the customer's JSON attributes.
OPERATORS = {
    "eq": "",
    "contains": "__icontains",
    "gt": "__gt",
    "gte": "__gte",
    "lt": "__lt",
    "lte": "__lte",
    "in": "__in",
}
OPERATOR_LABELS = {
    "eq": "is",
    "ne": "is not",
    "contains": "contains",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "is one of",
    "exists": "is set",
}
MAX_DAYS = 36_500


class SegmentRuleError(ValueError):
    """A rule that cannot be evaluated (unknown kind or operator, bad attribute name…)."""


@dataclass(frozen=True)
class ConditionKind:
    """One kind of segment condition.

    name: the rule's "kind"; label: the builder's wording; inputs: which builder inputs
    it reads ("attribute", "op", "value", "campaign", "days", "reliable"); build: the
    condition (validated dict) → Q over Customer, evaluated in the caller's workspace
    scope; volatile: see the module docstring; describe: the condition in words."""

    name: str
    label: str
    build: Callable[[dict], Q]
    inputs: tuple[str, ...] = ()
    volatile: bool = False
    describe: Callable[[dict], str] | None = field(default=None, compare=False)


CONDITION_KINDS: dict[str, ConditionKind] = {}


def register_condition(kind: ConditionKind) -> None:
    """Add (or replace: ready() may run twice in tests) a condition kind."""
    CONDITION_KINDS[kind.name] = kind


def conditions_of(rule) -> tuple[str, list[dict]]:
    """(match, conditions) of a rule in either form; match is "all" or "any"."""
    if isinstance(rule, dict):
        match = rule.get("match", "all")
        if match not in ("all", "any"):
            raise SegmentRuleError(f"Unknown match {match!r}: use all or any.")
        conditions = rule.get("conditions") or []
    else:
        match, conditions = "all", rule or []
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise SegmentRuleError("A rule's conditions are a list of objects.")
    return match, conditions


def kind_of(condition: dict) -> ConditionKind:
    name = condition.get("kind", "attribute")
    if name not in CONDITION_KINDS:
        raise SegmentRuleError(f"Unknown condition kind {name!r}.")
    return CONDITION_KINDS[name]


def condition_q(condition: dict) -> Q:
    q = kind_of(condition).build(condition)
    return ~q if condition.get("negate") else q


def rule_q(rule) -> Q:
    """The Q object of a rule. An empty rule matches nothing."""
    match, conditions = conditions_of(rule)
    if not conditions:
        return Q(pk__in=[])
    q = condition_q(conditions[0])
    for condition in conditions[1:]:
        q = (q | condition_q(condition)) if match == "any" else (q & condition_q(condition))
    return q


def rule_volatile(rule) -> bool:
    """Whether membership of the rule can change without a write to the customer or
    segment rows (so its segment is counted live, never from kept rollups)."""
    try:
        _, conditions = conditions_of(rule)
        return any(kind_of(c).volatile for c in conditions)
    except SegmentRuleError:
        return False


def describe_rule(rule) -> str:
    """The rule in words, for lists and confirmations."""
    match, conditions = conditions_of(rule)
    if not conditions:
        return "nobody (no condition)"
    words = []
    for condition in conditions:
        kind = kind_of(condition)
        text = kind.describe(condition) if kind.describe else kind.label
        words.append(f"not ({text})" if condition.get("negate") else text)
    return (" and " if match == "all" else " or ").join(words)


def segment_customers(segment: Segment) -> QuerySet:
    """Customers in the segment: matching its rule, or listed as members."""
    # Both conditions are on the customer row itself (the members as a subquery), so no
    # row repeats and no DISTINCT is needed: the database can semi-join the segment.
    members = Q(pk__in=segment.members.values("pk"))
    return Customer.objects.filter(rule_q(segment.rule) | members)


# --- The kinds this app answers --------------------------------------------------------


def _attribute_q(condition: dict) -> Q:
    attribute = str(condition.get("attribute", ""))
    op = condition.get("op", "eq")
    if not attribute.isidentifier():
        raise SegmentRuleError(f"Attribute name {attribute!r} is not usable in a rule.")
    if op == "exists":
        return Q(**{"attributes__has_key": attribute})
    if op == "ne":
        return ~Q(**{f"attributes__{attribute}": condition.get("value")})
    if op in OPERATORS:
        return Q(**{f"attributes__{attribute}{OPERATORS[op]}": condition.get("value")})
    raise SegmentRuleError(f"Unknown operator {op!r}.")


def campaign_id_of(condition: dict) -> int:
    """The condition's campaign id (an int), or SegmentRuleError."""
    try:
        return int(condition["campaign"])
    except (KeyError, TypeError, ValueError):
        raise SegmentRuleError("Choose a campaign for this condition.") from None


def campaign_name(condition: dict) -> str:
    try:
        pk = campaign_id_of(condition)
    except SegmentRuleError:
        return "?"
    name = Campaign.objects.filter(pk=pk).values_list("name", flat=True).first()
    return f"“{name}”" if name else f"campaign #{pk} (deleted)"


def _received_q(condition: dict) -> Q:
    # Sent (or delivered) only: a queued or failed delivery never reached the customer.
    sent = Delivery.objects.filter(
        node__campaign_id=campaign_id_of(condition),
        status__in=[Delivery.Status.SENT, Delivery.Status.DELIVERED],
    )
    return Q(pk__in=sent.values("customer_id"))


def days_of(condition: dict) -> int:
    try:
        days = int(condition["days"])
    except (KeyError, TypeError, ValueError):
        raise SegmentRuleError("Give a number of days.") from None
    if not 0 < days <= MAX_DAYS:
        raise SegmentRuleError(f"Days must be between 1 and {MAX_DAYS}.")
    return days


def _signed_up_q(condition: dict) -> Q:
    return Q(created_at__gte=timezone.now() - timedelta(days=days_of(condition)))


def _describe_attribute(c: dict) -> str:
    op = OPERATOR_LABELS.get(c.get("op", "eq"), c.get("op"))
    value = "" if c.get("op") == "exists" else f" {c.get('value')!r}"
    return f"{c.get('attribute')} {op}{value}"


register_condition(
    ConditionKind(
        name="attribute",
        label="Attribute",
        build=_attribute_q,
        inputs=("attribute", "op", "value"),
        describe=_describe_attribute,
    )
)
register_condition(
    ConditionKind(
        name="received",
        label="Received campaign",
        build=_received_q,
        inputs=("campaign",),
        volatile=True,
        describe=lambda c: f"received {campaign_name(c)}",
    )
)
register_condition(
    ConditionKind(
        name="unsubscribed",
        label="Unsubscribed",
        build=lambda c: Q(unsubscribed_at__isnull=False),
        volatile=True,
        describe=lambda c: "unsubscribed",
    )
)
register_condition(
    ConditionKind(
        name="signed_up_within",
        label="Signed up within",
        build=_signed_up_q,
        inputs=("days",),
        volatile=True,  # customers leave it as days pass
        describe=lambda c: f"signed up within {c.get('days')} days",
    )
)
