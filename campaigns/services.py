"""Services that change workspace, membership, template and campaign state."""

import hashlib
from dataclasses import asdict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
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
