"""Services that change workspace, membership and campaign state."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django_scopes import scope, scopes_disabled

from campaigns.models import Invitation, Membership, Role, Workspace


class MembershipError(ValueError):
    """A membership change that would leave the workspace in a bad state."""


def unique_workspace_slug(name: str) -> str:
    base = slugify(name)[:50] or "workspace"
    slug, n = base, 1
    while Workspace.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def workspace_create(*, name: str, owner) -> Workspace:
    """A new workspace with `owner` as its first owner."""
    workspace = Workspace.objects.create(name=name, slug=unique_workspace_slug(name))
    with scope(workspace=workspace):
        Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    return workspace


def member_invite(*, workspace: Workspace, email: str, role: str, invited_by) -> Invitation | None:
    """Invite `email`: an existing account joins at once (None returned); otherwise an
    invitation link is mailed and the Invitation returned."""
    email = email.strip().lower()
    user = get_user_model().objects.filter(email__iexact=email).first()
    if user is not None:
        membership, created = Membership.objects.get_or_create(
            workspace=workspace, user=user, defaults={"role": role}
        )
        if not created:
            raise MembershipError(f"{email} is already a member.")
        return None
    invitation = Invitation.objects.create(
        workspace=workspace, email=email, role=role, invited_by=invited_by
    )
    link = settings.TRACKING_BASE_URL + reverse("invitation", kwargs={"token": invitation.token})
    send_mail(
        subject=f"You are invited to {workspace.name} on Clickmap",
        message=(
            f"{invited_by.get_username()} invited you to the workspace {workspace.name} "
            f"as {Role(role).label.lower()}.\n\nAccept: {link}\n"
        ),
        from_email=None,
        recipient_list=[email],
    )
    return invitation


def invitation_find(token: str) -> Invitation | None:
    """The open invitation for a token, across workspaces (the token is the secret)."""
    with scopes_disabled():
        return (
            Invitation.objects.select_related("workspace")
            .filter(token=token, accepted_at__isnull=True)
            .first()
        )


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Make `user` a member with the invited role; idempotent for an existing member."""
    with scope(workspace=invitation.workspace):
        membership, _ = Membership.objects.get_or_create(
            workspace=invitation.workspace, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
    return membership


def _other_owners(membership: Membership) -> bool:
    return Membership.objects.filter(role=Role.OWNER).exclude(pk=membership.pk).exists()


def member_change_role(*, membership: Membership, role: str) -> Membership:
    """Change a member's role; the last owner cannot be demoted."""
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners(membership):
        raise MembershipError("A workspace needs at least one owner.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


def member_remove(*, membership: Membership) -> None:
    """Remove a member; the last owner cannot be removed."""
    if membership.role == Role.OWNER and not _other_owners(membership):
        raise MembershipError("A workspace needs at least one owner.")
    membership.delete()
