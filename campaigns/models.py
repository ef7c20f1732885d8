"""Workspaces (the tenants), their members, and the campaigns they send.

Every tenant model carries a path to its workspace and uses a ScopedManager, so a
query outside an active workspace scope raises instead of leaking another tenant's
rows (see campaigns/tenancy.py).
"""

import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django_scopes import ScopedManager


class Workspace(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Metric and classifier settings (PRODUCT.md "Metric definitions" and step 4).
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
    return secrets.token_urlsafe(32)


class Invitation(models.Model):
    """A pending invitation for someone who has no account (or no membership) yet."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    token = models.CharField(max_length=64, unique=True, default=_invitation_token)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.email} → {self.workspace}"


class Campaign(models.Model):
    class Kind(models.TextChoices):
        CAMPAIGN = "campaign", "Campaign"
        SCENARIO = "scenario", "Scenario"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        ARCHIVED = "archived", "Archived"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CAMPAIGN)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedManager(workspace="workspace")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "status", "kind"])]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse(
            "campaigns:detail",
            kwargs={"workspace_slug": self.workspace.slug, "campaign_id": self.pk},
        )
