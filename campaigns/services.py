"""Services that change workspace, membership, template and campaign state."""

import hashlib
import secrets
import smtplib
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import dateformat, timezone
from django.utils.text import slugify
from django_scopes import scope, scopes_disabled

from campaigns.inventory import inventory_links, template_warnings
from campaigns.models import (
    Customer,
    EmailNode,
    Invitation,
    Membership,
    Role,
    Template,
    TemplateLink,
    TemplateVersion,
    Variant,
    Workspace,
    invitation_token_hash,
)
from campaigns.personalise import personalisation_warnings
from campaigns.version_images import version_images_attach


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


def member_invite(
    *, workspace: Workspace, email: str, role: str, invited_by, link_for
) -> Invitation:
    """Invite `email` to `workspace` as `role`: store an invitation and mail its link.

    Exactly the same happens whether or not an account has that address (the same
    invitation, the same email, worded for both), so the members page reveals nothing
    about accounts, and nobody joins a workspace without opening the link and accepting.
    `link_for(token)` gives the link's absolute URL. A pending invitation to the same
    address is replaced by the new one. Raises MembershipError when a member of the
    workspace has the address, or when the mail server refuses the message (then nothing
    is stored).
    """
    email = email.strip().lower()
    with scope(workspace=workspace), transaction.atomic():
        if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
            raise MembershipError(f"{email} is already a member.")
        Invitation.objects.filter(
            workspace=workspace, email=email, accepted_at__isnull=True
        ).delete()
        token = secrets.token_urlsafe(32)
        invitation = Invitation.objects.create(
            workspace=workspace,
            email=email,
            role=role,
            invited_by=invited_by,
            token_hash=invitation_token_hash(token),
            expires_at=timezone.now() + timedelta(days=settings.INVITATION_VALID_DAYS),
        )
        try:
            _mail_invitation(invitation, link_for(token))
        except (OSError, smtplib.SMTPException) as error:
            # Rolls the invitation back: a link nobody received must not stay valid.
            raise MembershipError(
                f"The invitation email to {email} could not be sent ({error}). "
                "Nothing was saved; try again later."
            ) from error
    return invitation


def _mail_invitation(invitation: Invitation, link: str) -> None:
    inviter = invitation.invited_by.get_username() if invitation.invited_by else "Someone"
    workspace = invitation.workspace.name
    expires = dateformat.format(timezone.localtime(invitation.expires_at), "j F Y, H:i T")
    send_mail(
        subject=f"{inviter} invited you to {workspace} on Clickmap",
        message=(
            f"{inviter} invited {invitation.email} to join the workspace “{workspace}” "
            f"on Clickmap as {Role(invitation.role).label.lower()}.\n\n"
            "To accept, open this link, then log in with your Clickmap account for this "
            "address, or create one there if you have none:\n\n"
            f"{link}\n\n"
            f"The link works once, until {expires}. "
            "If you did not expect this invitation, ignore this email: nothing changes "
            "unless you accept.\n"
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


class InvitationRefused(Exception):
    """An invitation that cannot be accepted (by this account): `reason` says why.

    Reasons: "used", "expired", "other_address" (the account's email is not the
    invited one).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def invitation_find(token: str) -> Invitation | None:
    """The invitation a link's token names, across workspaces (the token is the secret),
    whatever its state; None for a token that names none."""
    with scopes_disabled():
        return (
            Invitation.objects.select_related("workspace", "invited_by")
            .filter(token_hash=invitation_token_hash(token))
            .first()
        )


def invitation_check(invitation: Invitation, user=None) -> None:
    """Raise InvitationRefused unless `invitation` can be accepted, by `user` when given:
    not used, not expired, and the account's email is the invited address (any case)."""
    if invitation.accepted_at is not None:
        raise InvitationRefused("used")
    if invitation.expired:
        raise InvitationRefused("expired")
    if user is not None and user.email.strip().casefold() != invitation.email.casefold():
        raise InvitationRefused("other_address")


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """Make `user` a member with the invited role and use the invitation up.

    The invitation's row is locked and checked again (invitation_check), so a link works
    once even when opened twice at the same moment; a refusal changes nothing. An
    existing member keeps their role.
    """
    with scopes_disabled():
        locked = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
    if locked is None:  # revoked meanwhile
        raise InvitationRefused("used")
    invitation_check(locked, user)
    with scope(workspace=invitation.workspace):
        membership, _ = Membership.objects.get_or_create(
            workspace=invitation.workspace, user=user, defaults={"role": locked.role}
        )
        locked.accepted_at = timezone.now()
        locked.accepted_by = user
        locked.save(update_fields=["accepted_at", "accepted_by"])
    invitation.accepted_at, invitation.accepted_by = locked.accepted_at, user
    return membership


@transaction.atomic
def invitation_signup(*, invitation: Invitation, username: str, password: str):
    """Create an account for the invited address and accept the invitation with it, in
    one transaction: a refused invitation creates no account. Returns the user."""
    user = get_user_model().objects.create_user(
        username=username, email=invitation.email, password=password
    )
    invitation_accept(invitation=invitation, user=user)
    return user


def _lock_memberships(membership: Membership) -> Membership | None:
    """Lock the membership's workspace row and read the membership again under the lock.

    Every role change and removal takes this lock first, so they run one at a time per
    workspace and each sees the others' committed changes: two owners demoting each
    other at once cannot both pass the last-owner check. None when it was removed.
    """
    Workspace.objects.select_for_update().filter(pk=membership.workspace_id).first()
    with scope(workspace=membership.workspace_id):
        return Membership.objects.filter(pk=membership.pk).first()


def _other_owners(membership: Membership) -> bool:
    with scope(workspace=membership.workspace_id):
        return (
            Membership.objects.filter(workspace_id=membership.workspace_id, role=Role.OWNER)
            .exclude(pk=membership.pk)
            .exists()
        )


@transaction.atomic
def member_change_role(*, membership: Membership, role: str) -> Membership:
    """Change a member's role. The workspace keeps at least one owner, whatever runs at
    the same time (_lock_memberships): demoting the last owner raises MembershipError."""
    current = _lock_memberships(membership)
    if current is None:
        raise MembershipError("That member was removed meanwhile.")
    if current.role == Role.OWNER and role != Role.OWNER and not _other_owners(current):
        raise MembershipError("A workspace needs at least one owner.")
    current.role = role
    current.save(update_fields=["role"])
    membership.role = role
    return membership


@transaction.atomic
def member_remove(*, membership: Membership) -> None:
    """Remove a member. The workspace keeps at least one owner, whatever runs at the same
    time (_lock_memberships): removing the last owner raises MembershipError."""
    current = _lock_memberships(membership)
    if current is None:
        return
    if current.role == Role.OWNER and not _other_owners(current):
        raise MembershipError("A workspace needs at least one owner.")
    current.delete()
    membership.pk = None


def content_hash(html: str, amp_html: str) -> str:
    return hashlib.sha256(f"{html}\0{amp_html}".encode()).hexdigest()


@transaction.atomic
def template_create(
    *,
    workspace: Workspace,
    name: str,
    html: str,
    amp_html: str = "",
    author=None,
    assets: dict[str, bytes] | None = None,
) -> TemplateVersion:
    """A new template with its first version (inventoried, images attached: see
    template_version_save for ``assets``)."""
    template = Template.objects.create(workspace=workspace, name=name)
    version, _ = template_version_save(
        template=template,
        html=html,
        amp_html=amp_html,
        author=author,
        note="First version",
        assets=assets,
    )
    return version


@transaction.atomic
def template_version_save(
    *,
    template: Template,
    html: str,
    amp_html: str = "",
    author=None,
    note: str = "",
    assets: dict[str, bytes] | None = None,
) -> tuple[TemplateVersion, bool]:
    """Save content as the template's next immutable version with its link inventory
    and its images (campaigns/version_images.py).

    ``assets`` maps relative paths as written in the HTML (``images/hero.png``) to the
    files' bytes: those images are verified and stored at once; web images are fetched
    by a task queued for the commit. Returns (version, created). Content equal to the
    latest version's creates nothing (given ``assets`` replace that version's files of
    the same paths). The template row is locked so two saves at once get consecutive
    numbers.
    """
    Template.objects.select_for_update().filter(pk=template.pk).first()
    latest = template.versions.order_by("-number").first()
    digest = content_hash(html, amp_html)
    if latest is not None and latest.content_hash == digest:
        if assets:
            version_images_attach(latest, assets)
        return latest, False
    found = inventory_links(html, "html")
    sample = Customer.objects.filter(workspace_id=template.workspace_id).order_by("pk").first()
    warnings = [asdict(w) for w in template_warnings(html) + personalisation_warnings(html, sample)]
    if amp_html:
        found += inventory_links(amp_html, "amp")
        warnings += [
            {**asdict(w), "format": "amp"}
            for w in template_warnings(amp_html) + personalisation_warnings(amp_html, sample)
        ]
    version = TemplateVersion.objects.create(
        template=template,
        number=(latest.number + 1) if latest else 1,
        html=html,
        amp_html=amp_html,
        content_hash=digest,
        note=note,
        warnings=warnings,
        author=author,
    )
    rows = TemplateLink.objects.bulk_create(
        TemplateLink(
            version=version,
            format=link.format,
            ordinal=link.ordinal,
            source_index=link.source_index,
            xpath=link.xpath,
            href=link.href,
            text=link.text,
            kind=link.kind,
            mso=link.mso,
            unsubscribe=link.unsubscribe,
            trackable=link.trackable,
            placeholder=link.placeholder,
        )
        for link in found
    )
    by_xpath = {(row.format, row.xpath): row for row in rows if not row.mso}
    twins = []
    for row, link in zip(rows, found, strict=True):
        if link.twin_xpath and (twin := by_xpath.get((row.format, link.twin_xpath))):
            row.twin = twin
            twins.append(row)
    TemplateLink.objects.bulk_update(twins, ["twin"])
    version_images_attach(version, assets)
    Template.objects.filter(pk=template.pk).update(updated_at=version.created_at)
    return version, True


@transaction.atomic
def variant_add(
    *,
    campaign,
    node_name: str,
    position: int,
    name: str,
    subject: str,
    template: Template,
    weight: int = 1,
    format: str = "html",
) -> Variant:
    """Add a variant (pinned to the template's latest version) to the campaign's node at
    `position`, creating the node. A campaign has one node; a scenario several."""
    if campaign.kind == campaign.Kind.CAMPAIGN:
        position = 1
    node, _ = EmailNode.objects.get_or_create(
        campaign=campaign, position=position, defaults={"name": node_name}
    )
    if node.variants.filter(name=name).exists():
        raise ValueError(f"“{node.name}” already has a variant {name}.")
    version = template.versions.order_by("-number").first()
    if format == "amp" and not version.amp_html:
        raise ValueError(f"“{template.name}” has no AMP part to send.")
    return Variant.objects.create(
        node=node,
        name=name,
        subject=subject,
        template_version=version,
        weight=weight,
        format=format,
    )
