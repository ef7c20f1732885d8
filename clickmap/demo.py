"""The demo workspace that `make run` opens on. Idempotent: running it again adds nothing."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django_scopes import scope

from campaigns.models import Campaign, Membership, Role, Workspace

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@clickmap.local"

DEMO_CAMPAIGNS = [
    ("Black Friday — 30% off everything", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
    ("November newsletter", Campaign.Kind.CAMPAIGN, Campaign.Status.SENT),
    ("Welcome series", Campaign.Kind.SCENARIO, Campaign.Status.SENDING),
    ("Abandoned cart reminder", Campaign.Kind.SCENARIO, Campaign.Status.SENDING),
    ("Winter collection preview", Campaign.Kind.CAMPAIGN, Campaign.Status.SCHEDULED),
    ("Loyalty programme relaunch", Campaign.Kind.CAMPAIGN, Campaign.Status.DRAFT),
    ("Spring clearance", Campaign.Kind.CAMPAIGN, Campaign.Status.ARCHIVED),
]


@dataclass
class DemoLogin:
    username: str
    password: str
    workspace: Workspace


@transaction.atomic
def seed_demo(password: str) -> DemoLogin:
    """Create (or refresh) the demo workspace, its owner and campaigns; sets the password."""
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=DEMO_USERNAME, defaults={"email": DEMO_EMAIL})
    user.set_password(password)
    user.save()

    workspace, _ = Workspace.objects.get_or_create(slug="demo", defaults={"name": "Demo Shop"})
    with scope(workspace=workspace):
        Membership.objects.get_or_create(
            workspace=workspace, user=user, defaults={"role": Role.OWNER}
        )
        for name, kind, status in DEMO_CAMPAIGNS:
            Campaign.objects.get_or_create(
                workspace=workspace,
                name=name,
                defaults={"kind": kind, "status": status, "created_by": user},
            )
    return DemoLogin(username=DEMO_USERNAME, password=password, workspace=workspace)
