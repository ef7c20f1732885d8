"""Segment membership: a rule on customer attributes, and/or an explicit list."""

from django.db.models import Q, QuerySet

from campaigns.models import Customer, Segment

# Rule operators; each maps to a lookup on the customer's JSON attributes.
OPERATORS = {
    "eq": "",
    "contains": "__icontains",
    "gt": "__gt",
    "gte": "__gte",
    "lt": "__lt",
    "lte": "__lte",
    "in": "__in",
}


class SegmentRuleError(ValueError):
    """A rule that cannot be evaluated (unknown operator, bad attribute name)."""


def rule_q(rule: list[dict]) -> Q:
    """The Q object of a rule: all conditions hold. An empty rule matches nothing."""
    if not rule:
        return Q(pk__in=[])
    q = Q()
    for condition in rule:
        attribute = str(condition.get("attribute", ""))
        op = condition.get("op", "eq")
        if not attribute.isidentifier():
            raise SegmentRuleError(f"Attribute name {attribute!r} is not usable in a rule.")
        if op == "exists":
            q &= Q(**{"attributes__has_key": attribute})
        elif op == "ne":
            q &= ~Q(**{f"attributes__{attribute}": condition.get("value")})
        elif op in OPERATORS:
            q &= Q(**{f"attributes__{attribute}{OPERATORS[op]}": condition.get("value")})
        else:
            raise SegmentRuleError(f"Unknown operator {op!r}.")
    return q


def segment_customers(segment: Segment) -> QuerySet:
    """Customers in the segment: matching its rule, or listed as members."""
    # Both conditions are on the customer row itself (the members as a subquery), so no
    # row repeats and no DISTINCT is needed: the database can semi-join the segment.
    members = Q(pk__in=segment.members.values("pk"))
    return Customer.objects.filter(rule_q(segment.rule) | members)
