"""The segment builder's form data ⇄ a rule (campaigns/segments.py).

The builder posts one row of inputs per condition, named ``c-<n>-<input>`` (kind,
attribute, op, value, campaign, days, reliable, negate), and ``match`` (all / any).
Values typed as text are given their JSON type, so "age > 30" compares numbers: an
integer or decimal becomes a number, true / false a boolean, and "in" takes a
comma-separated list.
"""

import re
from dataclasses import dataclass, field

from campaigns.models import Campaign
from campaigns.segments import (
    CONDITION_KINDS,
    OPERATOR_LABELS,
    SegmentRuleError,
    conditions_of,
    rule_q,
)

_ROW = re.compile(r"^c-(\d+)-kind$")
# A number as people type one; "01234" (a postcode) stays text.
_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?$")
MAX_CONDITIONS = 30


@dataclass
class Row:
    """One condition row as the builder shows it: its inputs' values and its error."""

    index: int
    kind: str = "attribute"
    attribute: str = ""
    op: str = "eq"
    value: str = ""
    campaign: str = ""
    days: str = ""
    reliable: bool = True
    negate: bool = False
    error: str = ""

    @property
    def inputs(self) -> tuple[str, ...]:
        kind = CONDITION_KINDS.get(self.kind)
        return kind.inputs if kind else ()


@dataclass
class Built:
    match: str = "all"
    rows: list[Row] = field(default_factory=list)
    rule: dict | None = None  # None while a row has an error
    errors: list[str] = field(default_factory=list)


def typed_value(text: str, op: str):
    """The JSON value of a typed text for operator `op`."""
    if op == "in":
        return [typed_value(part.strip(), "eq") for part in text.split(",") if part.strip()]
    stripped = text.strip()
    if _NUMBER.match(stripped):
        return float(stripped) if "." in stripped else int(stripped)
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def text_of(value) -> str:
    if isinstance(value, list):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def rows_from_data(data, drop: int | None = None) -> tuple[str, list[Row]]:
    """(match, rows) from posted builder data, in index order; `drop`: a removed row."""
    indexes = sorted({int(m.group(1)) for key in data for m in [_ROW.match(key)] if m})
    rows = []
    for n in indexes[:MAX_CONDITIONS]:
        if n == drop:
            continue
        get = lambda name, n=n: (data.get(f"c-{n}-{name}") or "").strip()  # noqa: E731
        rows.append(
            Row(
                index=n,
                kind=get("kind") or "attribute",
                attribute=get("attribute"),
                op=get("op") or "eq",
                value=data.get(f"c-{n}-value") or "",
                campaign=get("campaign"),
                days=get("days"),
                # Absent (a row just switched to this kind): reliable only, the default.
                reliable=f"c-{n}-reliable" not in data or get("reliable") in ("1", "on", "true"),
                negate=get("negate") in ("1", "on", "true"),
            )
        )
    match = data.get("match") if data.get("match") in ("all", "any") else "all"
    return match, rows


def condition_of(row: Row) -> dict:
    """The rule condition of a row; SegmentRuleError when it is incomplete or unknown."""
    if row.kind not in CONDITION_KINDS:
        raise SegmentRuleError(f"Unknown condition kind {row.kind!r}.")
    condition: dict = {"kind": row.kind}
    inputs = CONDITION_KINDS[row.kind].inputs
    if "attribute" in inputs:
        if not row.attribute.isidentifier():
            raise SegmentRuleError(
                "An attribute name is letters, digits and underscores (e.g. country)."
            )
        if row.op not in OPERATOR_LABELS:
            raise SegmentRuleError(f"Unknown operator {row.op!r}.")
        condition.update(attribute=row.attribute, op=row.op)
        if row.op != "exists":
            condition["value"] = typed_value(row.value, row.op)
    if "campaign" in inputs:
        if not row.campaign.isdigit() or not Campaign.objects.filter(pk=row.campaign).exists():
            raise SegmentRuleError("Choose a campaign of this workspace.")
        condition["campaign"] = int(row.campaign)
    if "days" in inputs:
        condition["days"] = row.days
    if "reliable" in inputs:
        condition["reliable"] = row.reliable
    if row.negate:
        condition["negate"] = True
    rule_q([condition])  # the kind's own checks (days in range…)
    if "days" in inputs:
        condition["days"] = int(row.days)
    return condition


def build(data, drop: int | None = None) -> Built:
    """The builder's rows and, when every row is a valid condition, its rule."""
    match, rows = rows_from_data(data, drop)
    built = Built(match=match, rows=rows)
    conditions = []
    for row in rows:
        try:
            conditions.append(condition_of(row))
        except SegmentRuleError as error:
            row.error = str(error)
            built.errors.append(str(error))
    if not rows:
        built.errors.append("Add at least one condition.")
    if not built.errors:
        built.rule = {"match": "any", "conditions": conditions} if match == "any" else conditions
    return built


def rows_of_rule(rule) -> tuple[str, list[Row]]:
    """The builder's rows showing a saved rule."""
    match, conditions = conditions_of(rule)
    rows = []
    for n, c in enumerate(conditions):
        rows.append(
            Row(
                index=n,
                kind=c.get("kind", "attribute"),
                attribute=str(c.get("attribute", "")),
                op=c.get("op", "eq"),
                value=text_of(c.get("value")),
                campaign=str(c.get("campaign", "")),
                days=str(c.get("days", "")),
                reliable=c.get("reliable", True) is not False,
                negate=bool(c.get("negate")),
            )
        )
    return match, rows
