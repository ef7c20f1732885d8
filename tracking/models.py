"""Events recorded by the tracking endpoints: clicks, opens, unsubscribes.

The click and open endpoints never touch the database: they append to a local spool
(tracking/spool.py) and tracking/ingest.py moves the spool here, classifying each
event. `event_id` is the spool's id for the event; it is unique, which is what makes
ingestion exactly-once however often a spool file is read.
"""

from django.db import models
from django.db.models.functions import Now
from django_scopes import ScopedManager

from campaigns.models import Customer, Delivery, TemplateLink, Workspace


class NextId(models.Func):
    """`nextval` of the event table's own id sequence (tracking/partitions.py), as the
    column's database default."""

    function = "nextval"
    template = "nextval(pg_get_serial_sequence('%(table)s', 'id'))"
    output_field = models.BigIntegerField()

    def as_sql(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, table=compiler.query.model._meta.db_table)


class DeviceClass(models.TextChoices):
    DESKTOP = "desktop", "Desktop"
    MOBILE = "mobile", "Mobile"
    TABLET = "tablet", "Tablet"
    BOT = "bot", "Bot"
    UNKNOWN = "unknown", "Unknown"


class EventBase(models.Model):
    """A stored click or open. The tables are partitioned by month of `at`
    (docs/partitioning.md), and every key of a partitioned table holds its partition key:
    a row is (id, at), and an event is stored once as (event_id, at) — a spooled event
    read again has the same id and time. `id` comes from the table's sequence."""

    pk = models.CompositePrimaryKey("id", "at")
    id = models.BigIntegerField(editable=False, db_default=NextId())
    event_id = models.UUIDField(editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    user_agent = models.TextField(blank=True)
    # Keyed hash of the IP, or its truncated network: never the raw address.
    ip = models.CharField(max_length=64, blank=True)
    device = models.CharField(
        max_length=8, choices=DeviceClass.choices, default=DeviceClass.UNKNOWN
    )
    reliable = models.BooleanField(default=True)
    reason = models.CharField(max_length=16, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        abstract = True
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "at"], name="%(app_label)s_%(class)s_event_id_key"
            )
        ]
        indexes = [
            # The aggregator's and the classifier's reads of a delivery's events.
            models.Index(fields=["delivery", "at"], name="%(class)s_delivery_at"),
            models.Index(fields=["workspace", "at"], name="%(class)s_workspace_at"),
        ]


class ClickEvent(EventBase):
    link = models.ForeignKey(
        TemplateLink, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    url = models.TextField()
    honeypot = models.BooleanField(default=False)
    method = models.CharField(max_length=8, default="GET")

    class Meta(EventBase.Meta):
        pass

    def __str__(self):
        return f"click {self.event_id} on {self.link_id}"


class OpenEvent(EventBase):
    class Meta(EventBase.Meta):
        pass

    def __str__(self):
        return f"open {self.event_id}"


class Unsubscribe(models.Model):
    """A customer's unsubscribe through one delivery's link or List-Unsubscribe header."""

    class Method(models.TextChoices):
        ONE_CLICK = "one_click", "One-click (RFC 8058)"
        PAGE = "page", "Confirmation page"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    method = models.CharField(max_length=10, choices=Method.choices)
    at = models.DateTimeField()

    objects = ScopedManager(workspace="workspace")

    def __str__(self):
        return f"{self.customer} unsubscribed"


class EventChange(models.Model):
    """A click or open stored or reclassified by ingestion, waiting for the rollups.

    Written in the same transaction as the event, so the aggregator (clickmap.rollups)
    sees every change exactly once; it deletes the rows it has applied, in the same
    transaction as the rollup update.
    """

    class Kind(models.TextChoices):
        CLICK = "c", "Click"
        OPEN = "o", "Open"

    kind = models.CharField(max_length=1, choices=Kind.choices)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="+")
    link = models.ForeignKey(
        TemplateLink, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # When ingestion wrote it: the oldest row's age is the aggregation's lag (health
    # check and metrics, clickmap/pipeline_health.py). The database's clock, as every
    # process writing rows shares it.
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    # The earliest time (`at`) of the events the row stands for. Events later than all the
    # aggregator has applied for their pair and recipient are applied from its stored
    # state without reading the history (the in-order fast path, docs/aggregation.md);
    # NULL (a deletion, or a writer that does not say) means: recompute from history.
    at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.kind} {self.delivery_id}/{self.link_id}"


class SpoolMark(models.Model):
    """How far one spool has been ingested: every event spooled in it before `at` is
    stored (with its change log rows). Each ingestion run moves it forward
    (tracking.ingest.ingest_spool); the click map's freshness starts from the oldest
    spool's mark (clickmap/freshness.py). `name` is TRACKING_SPOOL_NAME: one per tracker
    host (docs/scaling.md)."""

    name = models.CharField(max_length=200, primary_key=True)
    at = models.DateTimeField()

    def __str__(self):
        return f"spool {self.name} ingested up to {self.at}"
