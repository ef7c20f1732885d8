"""Workspaces (the tenants), their members, and the campaigns they send.

Every tenant model carries a path to its workspace and uses a ScopedManager, so a
query outside an active workspace scope raises instead of leaking another tenant's
rows (see campaigns/tenancy.py).
"""

import hashlib
import secrets
import zoneinfo
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django_scopes import ScopedManager


def validate_time_zone(name: str) -> None:
    """An IANA time zone name (Europe/Berlin, UTC…) that this server's tz database has."""
    if name not in zoneinfo.available_timezones():
        raise ValidationError(f"“{name}” is not a time zone name such as Europe/Berlin or UTC.")


class Workspace(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Scheduled sends are entered and shown in this zone (stored in UTC).
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="Scheduled sends are entered and shown in this time zone, e.g. Europe/Berlin.",
    )

    # Metric and classifier settings (docs/metrics.md; README "Sending and tracking").
    unique_window_hours = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(24 * 365)],
        help_text="0 counts a customer once per link ever; N counts repeats again after N hours.",
    )
    bot_min_seconds_after_delivery = models.PositiveIntegerField(
        default=2,
        validators=[MaxValueValidator(3600)],
        help_text="Clicks sooner than this after delivery are treated as scanner clicks.",
    )
    bot_burst_links = models.PositiveIntegerField(
        default=3,
        validators=[MinValueValidator(2), MaxValueValidator(100)],
        help_text="This many distinct links clicked by one delivery within the burst window…",
    )
    bot_burst_seconds = models.PositiveIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="…seconds are treated as an automated burst.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("campaigns:list", kwargs={"workspace_slug": self.slug})


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ANALYST = "analyst", "Analyst"
    VIEWER = "viewer", "Viewer"


# What each role may do: viewers read, analysts also change data, owners also manage members.
ROLE_RANK = {Role.VIEWER: 0, Role.ANALYST: 1, Role.OWNER: 2}


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="one_membership_per_user")
        ]
        ordering = ["user__username"]

    def __str__(self):
        return f"{self.user} in {self.workspace} ({self.role})"

    def allows(self, role: str) -> bool:
        """True when this member's role is at least `role`."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _invitation_token():
    # Migration 0001 names this default; invitations now keep only a hash of their token.
    return secrets.token_urlsafe(32)


def invitation_token_hash(token: str) -> str:
    """What an invitation stores of its link's token: a leaked table opens no workspace."""
    return hashlib.sha256(token.encode()).hexdigest()


def _unmailed_token_hash():
    # An invitation made without member_invite has a link nobody knows.
    return invitation_token_hash(secrets.token_urlsafe(32))


def _invitation_expiry():
    return timezone.now() + timedelta(days=settings.INVITATION_VALID_DAYS)


class Invitation(models.Model):
    """An invitation to join a workspace, mailed to an address whether or not an account
    has it. It can be accepted once, before `expires_at`, by an account with that address.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True, default=_unmailed_token_hash)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=_invitation_expiry)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.email} → {self.workspace}"

    @property
    def expired(self) -> bool:
        return self.expires_at <= timezone.now()


class Campaign(models.Model):
    class Kind(models.TextChoices):
        CAMPAIGN = "campaign", "Campaign"
        SCENARIO = "scenario", "Scenario"

    class Status(models.TextChoices):
        # Set only by campaigns/scheduling.py and campaigns/sending.py, from what happened.
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        ARCHIVED = "archived", "Archived"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CAMPAIGN)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    description = models.TextField(blank=True)
    # When a scheduled send starts (UTC); beat's start_due_sends starts it.
    scheduled_at = models.DateTimeField(null=True, blank=True)
    # Why the last send run failed (the SMTP server unreachable…); empty otherwise.
    send_error = models.TextField(blank=True)
    segment = models.ForeignKey(
        "Segment",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="campaigns",
        help_text="Who receives it; empty means every subscribed customer.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "status", "kind"]),
            # Beat's look-up of due scheduled sends, across workspaces.
            models.Index(
                fields=["scheduled_at"],
                condition=models.Q(status="scheduled"),
                name="campaign_due_scheduled",
            ),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse(
            "campaigns:detail",
            kwargs={"workspace_slug": self.workspace.slug, "campaign_id": self.pk},
        )


class Template(models.Model):
    """An email template; its content lives in immutable TemplateVersions."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse(
            "campaigns:template",
            kwargs={"workspace_slug": self.workspace.slug, "template_id": self.pk},
        )


class ImmutableError(Exception):
    """A saved template version was about to change."""


class TemplateVersion(models.Model):
    """One saved state of a template. Never changes once saved: deliveries pin it, so old
    sends keep the link positions they were sent with."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    html = models.TextField()
    amp_html = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64)
    note = models.CharField(max_length=200, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="template__workspace")

    class Meta:
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="one_number_per_version")
        ]

    def __str__(self):
        return f"{self.template} v{self.number}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ImmutableError("A saved template version cannot change; save a new version.")
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse(
            "campaigns:version",
            kwargs={
                "workspace_slug": self.template.workspace.slug,
                "template_id": self.template_id,
                "number": self.number,
            },
        )


class TemplateLink(models.Model):
    """One link of a template version's inventory (campaigns/inventory.py makes them)."""

    class Format(models.TextChoices):
        HTML = "html", "HTML"
        AMP = "amp", "AMP"

    class Kind(models.TextChoices):
        A = "a", "Link"
        AREA = "area", "Image map area"
        VML = "vml", "Outlook VML"

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="links")
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.HTML)
    ordinal = models.PositiveIntegerField()
    source_index = models.PositiveIntegerField()
    xpath = models.TextField()
    href = models.TextField()
    text = models.TextField(blank=True)
    kind = models.CharField(max_length=4, choices=Kind.choices, default=Kind.A)
    mso = models.BooleanField(default=False)
    twin = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="mso_copies"
    )
    unsubscribe = models.BooleanField(default=False)
    trackable = models.BooleanField(default=True)
    placeholder = models.BooleanField(default=False)

    objects = ScopedManager(workspace="version__template__workspace")

    class Meta:
        ordering = ["version", "format", "ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "format", "ordinal"], name="one_ordinal_per_format"
            )
        ]

    def __str__(self):
        return f"{self.xpath} → {self.href}"


class Customer(models.Model):
    """A recipient. `external_id` is the workspace's own id (or cookie id) for them."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="customers")
    # As long as the longest address: a customer imported by email without an external
    # id gets their address as one.
    external_id = models.CharField(max_length=254)
    email = models.EmailField(max_length=254, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["external_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "external_id"], name="one_external_id_per_workspace"
            ),
        ]
        indexes = [models.Index(fields=["workspace", "email"])]

    def __str__(self):
        return self.email or self.external_id


class Segment(models.Model):
    """A group of customers: a rule on attributes, or an explicit member list (or both,
    which is their union)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=200)
    # [{"attribute": "country", "op": "eq", "value": "DE"}, …], all must hold.
    rule = models.JSONField(default=list, blank=True)
    members = models.ManyToManyField(Customer, blank=True, related_name="segments")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class EmailNode(models.Model):
    """One email of a campaign (a campaign has one, a scenario several, by position)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=1)
    from_email = models.CharField(max_length=254, blank=True)
    # The From header's display name ("Fernhill Outdoor <…>"); empty: the address alone.
    from_name = models.CharField(max_length=120, blank=True)
    reply_to = models.EmailField(max_length=254, blank=True)
    # The inbox preview text after the subject, rendered as a hidden span (Jinja allowed).
    preheader = models.CharField(max_length=300, blank=True)

    objects = ScopedManager(workspace="campaign__workspace")

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "position"], name="one_node_per_position")
        ]

    def __str__(self):
        return f"{self.campaign}: {self.name}"


class Variant(models.Model):
    """An A/B variant of a node: its subject and the template version it sends."""

    class Format(models.TextChoices):
        HTML = "html", "HTML"
        AMP = "amp", "AMP"

    node = models.ForeignKey(EmailNode, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=60, default="A")
    weight = models.PositiveIntegerField(default=1)
    subject = models.CharField(max_length=400)
    template_version = models.ForeignKey(
        TemplateVersion, on_delete=models.PROTECT, related_name="variants"
    )
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.HTML)

    objects = ScopedManager(workspace="node__campaign__workspace")

    class Meta:
        ordering = ["node", "name"]
        constraints = [
            models.UniqueConstraint(fields=["node", "name"], name="one_variant_name_per_node")
        ]

    def __str__(self):
        return f"{self.node} / {self.name}"


class Delivery(models.Model):
    """One email to one customer from one node. Unique per (node, customer), which is what
    makes sending idempotent. Pins the template version it was sent with."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        BOUNCED = "bounced", "Bounced"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(EmailNode, on_delete=models.CASCADE, related_name="deliveries")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="deliveries")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="deliveries")
    template_version = models.ForeignKey(
        TemplateVersion, on_delete=models.PROTECT, related_name="deliveries"
    )
    format = models.CharField(max_length=4, choices=Variant.Format.choices, default="html")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Set (and committed) just before the message goes to the SMTP server. A delivery
    # still "sending" without it never left: a rerun sends it. With it, the run stopped
    # while the server was taking the message, which may have left: never resent.
    handed_over_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "customer"], name="one_delivery_per_node")
        ]
        indexes = [models.Index(fields=["node", "status"])]

    def __str__(self):
        return f"{self.node} → {self.customer}"


class TestSend(models.Model):
    """A test of a campaign's email mailed to given addresses. Never a Delivery: its
    links go straight to their destinations and it has no open pixel, so nothing about
    it reaches an event, a rollup or a number (campaigns/test_sends.py)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="test_sends")
    addresses = models.JSONField(default=list)
    # The customer whose attributes personalised it (None: no customer, empty attributes).
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedManager(workspace="workspace")
    __test__ = False  # a model, not a pytest test class

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"test of {self.campaign} to {', '.join(self.addresses)}"


class DeliveryCount(models.Model):
    """How many deliveries a variant has in a status: `count(*)` of campaigns_delivery
    grouped by (variant, status), kept exact by database triggers on every write to it
    (campaigns/delivery_counts.py). Read only; a row exists only while n > 0.

    Within one node, deliveries are distinct customers (one delivery per node and
    customer, and a delivery's variant is one of its node's), so summing n over one
    node's variants counts customers in O(variants).
    """

    # No database constraint, and Django's delete collector leaves these rows alone: only
    # the triggers write here (they drop a count when its last delivery goes).
    variant = models.ForeignKey(
        Variant,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # the unique (variant, status) index serves lookups by variant
        related_name="+",
    )
    status = models.CharField(max_length=10)
    n = models.BigIntegerField()

    objects = ScopedManager(workspace="variant__node__campaign__workspace")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["variant", "status"], name="one_count_per_status")
        ]

    def __str__(self):
        return f"{self.variant_id} {self.status}: {self.n}"


class ImageBlob(models.Model):
    """A verified, re-encoded image, stored once however many versions use it: its key
    is the sha256 of its bytes. It holds bytes and their shape only, nothing of a
    tenant, so it needs no scope; tenants reach it only through their VersionImages."""

    digest = models.CharField(max_length=64, primary_key=True)
    mime = models.CharField(max_length=20)
    data = models.BinaryField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.digest[:12]} {self.mime} {self.width}×{self.height}"


class VersionImage(models.Model):
    """One image source of a template version (as written in its HTML or AMP part) and
    what became of it: stored (its blob), pending (a fetch is queued) or failed (why).
    Beside the immutable version: fetching again changes these rows, never the version."""

    class Origin(models.TextChoices):
        REMOTE = "remote", "Fetched"
        UPLOAD = "upload", "Uploaded"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be fetched"
        STORED = "stored", "Stored"
        FAILED = "failed", "Not shown"

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="images")
    format = models.CharField(max_length=4, choices=TemplateLink.Format.choices, default="html")
    src = models.TextField()
    # sha256 of src: the unique key (a long URL would overflow an index on src itself).
    src_key = models.CharField(max_length=64)
    url = models.TextField(blank=True)  # the web address fetched; empty for uploads
    origin = models.CharField(max_length=6, choices=Origin.choices, default=Origin.REMOTE)
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.PENDING)
    blob = models.ForeignKey(
        ImageBlob, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=20, blank=True)  # ImageRefused.code
    message = models.TextField(blank=True)
    ordinal = models.PositiveIntegerField(default=0)  # place in the source
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedManager(workspace="version__template__workspace")

    class Meta:
        ordering = ["version", "format", "ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "format", "src_key"], name="one_row_per_image_source"
            )
        ]

    def __str__(self):
        return f"{self.version} {self.src} ({self.status})"


class CustomerImport(models.Model):
    """One upload of a customer file and how its import went (campaigns/customer_import.py).

    The file waits under CUSTOMER_IMPORT_DIR while the user maps its columns; the import
    task reads it from there, so the web and worker hosts must share that directory (like
    the tracking spool). `mapping` is one entry per column of the file:
    {"field": "email" | "external_id" | "attribute" | "ignore", "name": …, "type": …}.
    """

    class Key(models.TextChoices):
        EMAIL = "email", "Email address"
        EXTERNAL_ID = "external_id", "External id"

    class Status(models.TextChoices):
        MAPPING = "mapping", "Waiting for the column mapping"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="customer_imports"
    )
    file_name = models.CharField(max_length=255)
    path = models.CharField(max_length=500)
    key = models.CharField(max_length=12, choices=Key.choices, default=Key.EMAIL)
    columns = models.JSONField(default=list)
    mapping = models.JSONField(default=list)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.MAPPING)
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    rows_read = models.PositiveBigIntegerField(default=0)
    created = models.PositiveBigIntegerField(default=0)
    updated = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)  # why the file itself could not be imported
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.file_name} ({self.get_status_display()})"

    @property
    def errors_path(self) -> str:
        return f"{self.path}.errors.csv"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
