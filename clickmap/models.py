"""Rollups of click and open events, kept exact and incrementally by clickmap.rollups.

The unit of work is a *pair*: one customer and one link within one variant of an email
node. Every figure of docs/metrics.md is a sum or a count over pairs, so the aggregator
recomputes each touched pair from its raw events and applies the difference:
exact, idempotent, and unaffected by late or reclassified events.

- PairRollup: a pair's whole contribution (also the row locked while it is updated).
- PairDayRollup: the same split by day and device class, for periods and device filters.
- LinkRollup: per link and variant, all time: the dashboard's default answer.
- RecipientRollup / EmailRollup: whether a customer clicked or opened a variant's email,
  and the per-variant counts of clickers and openers.
- LinkDayRollup: per link, variant, day and device, the sums of the pairs' day cells
  (clicks per day, and a period's or device's totals without reading pairs).
- RecipientDayRollup: whether a customer clicked / opened a variant's email on a day on
  a device class.
- LinkSpanRollup / EmailSpanRollup: "spans", which make distinct counts over any period
  additive. Take one customer's click days on a link (or click or open days on an
  email), on one device class or any ('' below): each day d with the previous such day
  p (or DAY_ZERO) is a span (p, d]. The customer clicked within [from, to] exactly when
  one of its spans has from <= d <= to and p < from, and then only one does. So the
  distinct customers of a period are a sum of span counts: an exact COUNT DISTINCT over
  any date range from a few hundred rows per link.

Segments have their own rollups (clickmap/segment_rollups.py): SegmentMember holds each
segment's members as of the last aggregation, and SegmentLinkRollup, SegmentEmailRollup,
SegmentLinkDayRollup, SegmentLinkSpanRollup, SegmentEmailSpanRollup and
SegmentDeliveryCount the per-segment sums of the rows above (and of the deliveries), so a
segment's click map reads a few rows instead of its customers'.

`*_rel` counts only reliable events; `window_*` counts clicks counted in window mode
(a repeat within the workspace's unique-click window after a counted click is not).
"""

from datetime import date

from django.db import models
from django_scopes import ScopedManager

from campaigns.models import Customer, Segment, TemplateLink, Variant, Workspace


def _key(model, index: bool = False):
    """A key of a per-customer rollup (pairs, recipients, their days): rows derived from
    the events and written by the thousand in every aggregator batch. No database foreign
    key: each inserted row would lock its customer's row, one random page more per row to
    write and log; Django's collector still deletes the rows with what they reference
    (on_delete runs in Python). An index only where a read or that cascade needs one."""
    return models.ForeignKey(
        model, on_delete=models.CASCADE, related_name="+", db_index=index, db_constraint=False
    )


DAY_ZERO = date(1, 1, 1)  # the start of a customer's first span
COUNTERS = ("total_all", "total_rel", "window_all", "window_rel")  # of pairs, links, days
LINK_COUNTERS = (*COUNTERS, "unique_all", "unique_rel")  # of links (and segments' links)
RECIPIENT_FLAGS = ("clicked_all", "clicked_rel", "opened_all", "opened_rel")  # of recipients
EMAIL_COUNTERS = ("clickers_all", "clickers_rel", "openers_all", "openers_rel")  # their counts


def _counters(name: str, doc: str, names: tuple, field) -> type:
    """An abstract model of the counters `names`, each a `field()`: the one place a
    rollup's counters are declared, so adding one is one edit of the names above (its
    tables, their segment twins, SEGMENT_KEYS and the batch's statements follow them).
    `counter_names` keeps their order, the order the aggregator's rows carry them in."""
    meta = type("Meta", (), {"abstract": True})
    attrs = {n: field() for n in names}
    return type(
        name,
        (models.Model,),
        {**attrs, "Meta": meta, "counter_names": names, "__module__": __name__, "__doc__": doc},
    )


PairCounters = _counters(
    "PairCounters",
    "A pair's (or its day cell's) clicks: all, reliable, counted in window mode.",
    COUNTERS,
    lambda: models.PositiveIntegerField(default=0),
)
ClickCounters = _counters(
    "ClickCounters",
    "Sums of pair counters (a link's day, a segment's).",
    COUNTERS,
    lambda: models.BigIntegerField(default=0),
)
LinkCounters = _counters(
    "LinkCounters",
    "Sums of pair counters, and the pairs with a click (unique clickers).",
    LINK_COUNTERS,
    lambda: models.BigIntegerField(default=0),
)
RecipientFlags = _counters(
    "RecipientFlags",
    "Whether a customer clicked / opened (a click implies an open), all and reliable.",
    RECIPIENT_FLAGS,
    lambda: models.BooleanField(default=False),
)
EmailCounters = _counters(
    "EmailCounters",
    "How many recipients have each flag: clickers and openers, all and reliable.",
    EMAIL_COUNTERS,
    lambda: models.BigIntegerField(default=0),
)


class PairRollup(PairCounters):
    workspace = _key(Workspace)
    variant = _key(Variant)  # the unique constraint's prefix
    link = _key(TemplateLink)  # the (link, customer) index's prefix
    customer = _key(Customer, index=True)
    # The state the in-order fast path applies a later click to (docs/aggregation.md):
    # the time of the pair's last click applied, and of its last counted click (all
    # clicks; reliable ones alone). NULL with clicks counted: recompute from history.
    last_at = models.DateTimeField(null=True)
    counted_at_all = models.DateTimeField(null=True)
    counted_at_rel = models.DateTimeField(null=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["variant", "link", "customer"], name="one_pair")
        ]
        indexes = [models.Index(fields=["link", "customer"])]

    def __str__(self):
        return f"pair v{self.variant_id} l{self.link_id} c{self.customer_id}"


class PairDayRollup(PairCounters):
    pair = models.ForeignKey(
        PairRollup, on_delete=models.CASCADE, related_name="days", db_constraint=False
    )
    workspace = _key(Workspace)
    variant = _key(Variant)  # the (variant, day) index's prefix
    link = _key(TemplateLink)
    customer = _key(Customer, index=True)  # a recipient's cells (clickmap/spans.py)
    day = models.DateField()
    device = models.CharField(max_length=8)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "link", "customer", "day", "device"], name="one_pair_day"
            )
        ]
        indexes = [models.Index(fields=["variant", "day"])]

    def __str__(self):
        return f"pair {self.pair_id} on {self.day} ({self.device})"


class LinkRollup(LinkCounters):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="+")
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["variant", "link"], name="one_link_rollup")]

    def __str__(self):
        return f"link {self.link_id} of variant {self.variant_id}"


class RecipientRollup(RecipientFlags):
    workspace = _key(Workspace)
    variant = _key(Variant)  # the unique constraint's prefix
    customer = _key(Customer, index=True)
    # The time of the recipient's last click or open applied (the fast path's state).
    last_at = models.DateTimeField(null=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["variant", "customer"], name="one_recipient")
        ]

    def __str__(self):
        return f"customer {self.customer_id} of variant {self.variant_id}"


class EmailRollup(EmailCounters):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    variant = models.OneToOneField(Variant, on_delete=models.CASCADE, related_name="+")

    objects = ScopedManager(workspace="workspace")

    def __str__(self):
        return f"email totals of variant {self.variant_id}"


def _scoped():
    """The workspace and variant keys of a rollup table (their indexes are the unique
    constraint's prefix or not needed: a variant's rows are read by the constraint)."""
    return (
        models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False),
        models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="+", db_index=False),
    )


class LinkDayRollup(ClickCounters):
    workspace, variant = _scoped()
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    device = models.CharField(max_length=8)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "link", "day", "device"], name="one_link_day"
            )
        ]

    def __str__(self):
        return f"link {self.link_id} of variant {self.variant_id} on {self.day} ({self.device})"


class Span(models.Model):
    """How many customers have the span (since, day] of event days (see above)."""

    device = models.CharField(max_length=8, blank=True)  # '' for any device
    reliable = models.BooleanField()  # spans of reliable events only
    day = models.DateField()
    since = models.DateField()
    n = models.BigIntegerField(default=0)

    counter_names = ("n",)
    objects = ScopedManager(workspace="workspace")

    class Meta:
        abstract = True


class LinkSpanRollup(Span):
    """Spans of click days on the link."""

    workspace, variant = _scoped()
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "link", "device", "reliable", "day", "since"],
                name="one_link_span",
            )
        ]

    def __str__(self):
        return f"link {self.link_id} of variant {self.variant_id}: ({self.since}, {self.day}]"


class RecipientDayRollup(RecipientFlags):
    workspace = _key(Workspace)
    variant = _key(Variant)  # the unique constraint's prefix
    customer = _key(Customer, index=True)
    day = models.DateField()
    device = models.CharField(max_length=8)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "customer", "day", "device"], name="one_recipient_day"
            )
        ]

    def __str__(self):
        return f"customer {self.customer_id} of variant {self.variant_id} on {self.day}"


class EmailSpanRollup(Span):
    """Spans of days with a click on any link of the email (or with an open)."""

    class Kind(models.TextChoices):
        CLICK = "c", "Click"
        OPEN = "o", "Open"

    workspace, variant = _scoped()
    kind = models.CharField(max_length=1, choices=Kind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["variant", "kind", "device", "reliable", "day", "since"],
                name="one_email_span",
            )
        ]

    def __str__(self):
        return f"{self.kind} span of variant {self.variant_id}: ({self.since}, {self.day}]"


class SegmentMember(models.Model):
    """A customer of a segment, as of the last aggregation (clickmap/segment_rollups.py)."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "customer"], name="one_segment_member")
        ]

    def __str__(self):
        return f"customer {self.customer_id} in segment {self.segment_id}"


class MembershipChange(models.Model):
    """A customer (its attributes or explicit memberships changed, or it is new) or a
    segment (new, or its rule changed) whose membership the aggregator evaluates again.
    Written by database triggers; plain ids, so a deleted row's log entry is harmless."""

    customer_id = models.BigIntegerField(null=True)
    segment_id = models.BigIntegerField(null=True)

    def __str__(self):
        return f"membership change: customer {self.customer_id}, segment {self.segment_id}"


def _of_segment():
    """The workspace, segment and variant keys of a segment rollup (the unique
    constraint, segment first, is the index the reads use)."""
    return (
        models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False),
        models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False),
        models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="+", db_index=False),
    )


class SegmentLinkRollup(LinkCounters):
    """LinkRollup of a segment's members."""

    twin_of = LinkRollup  # the same rows for a segment's members

    workspace, segment, variant = _of_segment()
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "variant", "link"], name="one_segment_link")
        ]

    def __str__(self):
        return f"link {self.link_id} of variant {self.variant_id} in segment {self.segment_id}"


class SegmentEmailRollup(EmailCounters):
    """EmailRollup of a segment's members."""

    twin_of = EmailRollup  # the same rows for a segment's members

    workspace, segment, variant = _of_segment()

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "variant"], name="one_segment_email")
        ]

    def __str__(self):
        return f"email totals of variant {self.variant_id} in segment {self.segment_id}"


class SegmentLinkDayRollup(ClickCounters):
    """LinkDayRollup of a segment's members."""

    twin_of = LinkDayRollup  # the same rows for a segment's members

    workspace, segment, variant = _of_segment()
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    device = models.CharField(max_length=8)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "variant", "link", "day", "device"], name="one_segment_link_day"
            )
        ]

    def __str__(self):
        return f"link {self.link_id} in segment {self.segment_id} on {self.day} ({self.device})"


class SegmentLinkSpanRollup(Span):
    """LinkSpanRollup of a segment's members."""

    twin_of = LinkSpanRollup  # the same rows for a segment's members

    workspace, segment, variant = _of_segment()
    link = models.ForeignKey(TemplateLink, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "variant", "link", "device", "reliable", "day", "since"],
                name="one_segment_link_span",
            )
        ]

    def __str__(self):
        return f"link {self.link_id} in segment {self.segment_id}: ({self.since}, {self.day}]"


class SegmentEmailSpanRollup(Span):
    """EmailSpanRollup of a segment's members."""

    twin_of = EmailSpanRollup  # the same rows for a segment's members

    workspace, segment, variant = _of_segment()
    kind = models.CharField(max_length=1, choices=EmailSpanRollup.Kind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "variant", "kind", "device", "reliable", "day", "since"],
                name="one_segment_email_span",
            )
        ]

    def __str__(self):
        return f"{self.kind} span of variant {self.variant_id} in segment {self.segment_id}"


class SegmentDeliveryCount(models.Model):
    """DeliveryCount of a segment's members, kept by a trigger on campaigns_delivery and
    by the aggregator as members come and go. No foreign key to the variant: deliveries
    leave with their variant, and their counts with them (rows reaching 0 are deleted)."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    variant_id = models.BigIntegerField()
    status = models.CharField(max_length=10)
    n = models.BigIntegerField(default=0)

    counter_names = ("n",)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "variant_id", "status"], name="one_segment_delivery_count"
            )
        ]

    def __str__(self):
        return f"{self.n} {self.status} of variant {self.variant_id} in segment {self.segment_id}"


# The segment twins (clickmap/segment_rollups.py), and what the aggregator adds to.
SEGMENT_ROLLUPS = (
    SegmentLinkRollup,
    SegmentEmailRollup,
    SegmentLinkDayRollup,
    SegmentLinkSpanRollup,
    SegmentEmailSpanRollup,
)


def segment_key(model) -> tuple:
    """The columns of a segment rollup's rows as the aggregator adds them: the workspace,
    then its unique constraint's (segment first)."""
    (unique,) = model._meta.constraints
    return ("workspace_id", *(model._meta.get_field(f).attname for f in unique.fields))


class Preview(models.Model):
    """A rendered picture of a template version (clickmap/render.py) with its link boxes.

    One per version × format × device × customer × ``exact``: personalised for a sample
    ``customer`` (None: one without data) with missing names left empty, or ``exact``ly
    as that customer was sent it ("Preview for"). ``boxes`` maps each
    TemplateLink id (a string, as JSON keys are) to its boxes ``[x, y, width, height]`` in
    CSS pixels of the picture, which is ``width`` × ``height`` CSS pixels at ``scale``.
    ``input_hash`` names what was rendered, so a changed customer renders again.
    """

    class Format(models.TextChoices):
        HTML = "html", "HTML"
        AMP = "amp", "AMP"

    class Device(models.TextChoices):
        DESKTOP = "desktop", "Desktop"
        MOBILE = "mobile", "Mobile"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Rendering"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(
        "campaigns.TemplateVersion", on_delete=models.CASCADE, related_name="previews"
    )
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.HTML)
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.DESKTOP)
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    exact = models.BooleanField(default=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)  # why it failed
    notice = models.TextField(blank=True)  # done, but what the picture leaves out
    input_hash = models.CharField(max_length=64, blank=True)
    image = models.BinaryField(blank=True, default=b"")
    mime = models.CharField(max_length=32, blank=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    scale = models.FloatField(default=1.0)
    boxes = models.JSONField(default=dict, blank=True)
    render_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["version", "format", "device"],
                condition=models.Q(customer__isnull=True),
                name="one_template_preview",
            ),
            models.UniqueConstraint(
                fields=["version", "format", "device", "customer", "exact"],
                condition=models.Q(customer__isnull=False),
                name="one_customer_preview",
            ),
        ]

    def __str__(self):
        whose = f" for customer {self.customer_id}" if self.customer_id else ""
        whose += " (exact)" if self.exact else ""
        return f"{self.device} {self.format} preview of version {self.version_id}{whose}"


class ShardMark(models.Model):
    """How far the rollups are up to date, per shard of the change log (`shard` of
    `of`, as clickmap.rollups splits it): every event spooled before `at` counts in
    the shard's customers' numbers. clickmap/pipeline.py moves it forward when a run
    has applied every change row that existed when it started; clickmap/freshness.py
    tells the map page the oldest of the current shards' marks."""

    shard = models.PositiveIntegerField()
    of = models.PositiveIntegerField()
    at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["of", "shard"], name="one_shard_mark")]

    def __str__(self):
        return f"shard {self.shard}/{self.of} up to date as of {self.at}"
