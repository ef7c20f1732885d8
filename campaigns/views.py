"""Workspace, member and campaign pages. Thin: parsing and shaping only."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from campaigns import selectors, services, version_images
from campaigns.forms import (
    CampaignFilterForm,
    CampaignForm,
    InviteForm,
    RoleForm,
    SignupForm,
    TemplateContentForm,
    TemplateCreateForm,
    VariantForm,
    WorkspaceCreateForm,
    WorkspaceSettingsForm,
)
from campaigns.inventory import TemplateInputError
from campaigns.models import (
    Campaign,
    Invitation,
    Membership,
    Role,
    Template,
    TemplateVersion,
    VersionImage,
)
from campaigns.send_views import send_panel_context
from campaigns.sending import send_progress
from campaigns.tenancy import memberships_of, workspace_view

CAMPAIGNS_PER_PAGE = 20


@login_required
def home(request):
    """Land in the user's first workspace; without one, or asked to (`?new=1`, the
    switcher's "+ New workspace"), offer to create one."""
    memberships = memberships_of(request.user)
    if memberships and not request.GET.get("new"):
        return redirect(memberships[0].workspace)
    form = WorkspaceCreateForm()
    return render(request, "campaigns/home.html", {"form": form})


@login_required
@require_POST
def workspace_create(request):
    form = WorkspaceCreateForm(request.POST)
    if not form.is_valid():
        return render(request, "campaigns/home.html", {"form": form}, status=400)
    workspace = services.workspace_create(name=form.cleaned_data["name"], owner=request.user)
    messages.success(request, f"Workspace “{workspace.name}” created. You are its owner.")
    return redirect(workspace)


@workspace_view
def workspace_home(request):
    return redirect(request.workspace)


@workspace_view
def campaign_list(request):
    form = CampaignFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    campaigns = selectors.campaign_list(
        q=filters.get("q", ""),
        status=filters.get("status", ""),
        kind=filters.get("kind", ""),
        sort=filters.get("sort") or "newest",
    )
    page = Paginator(campaigns, CAMPAIGNS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "filtered": any(filters.get(k) for k in ("q", "status", "kind")),
        "query": query.urlencode(),
    }
    template = (
        "campaigns/partials/_campaign_table.html"
        if request.htmx and not request.htmx.boosted
        else "campaigns/campaign_list.html"
    )
    return render(request, template, context)


@workspace_view(role=Role.ANALYST)
def campaign_create(request):
    form = CampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.instance.workspace = request.workspace
        form.instance.created_by = request.user
        campaign = form.save()
        messages.success(request, f"Campaign “{campaign.name}” created.")
        return redirect(campaign)
    return render(request, "campaigns/campaign_form.html", {"form": form, "campaign": None})


def campaign_page_context(campaign):
    """The campaign page's own context (the send panel adds send_views.send_panel_context)."""
    return _campaign_context(campaign)


def _campaign_context(campaign):
    return {
        "campaign": campaign,
        "nodes": campaign.nodes.prefetch_related("variants__template_version__template"),
        "progress": send_progress(campaign),
    }


@workspace_view
def campaign_detail(request, campaign_id):
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = _campaign_context(campaign)
    context["variant_form"] = VariantForm(initial={"subject": campaign.name})
    context.update(send_panel_context(request, campaign))
    return render(request, "campaigns/campaign_detail.html", context)


@workspace_view
def campaign_progress(request, campaign_id):
    """The send-progress fragment (htmx polls it while the campaign is sending)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = _campaign_context(campaign)
    context.update(send_panel_context(request, campaign))
    return render(request, "campaigns/partials/_send_progress.html", context)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_variant_add(request, campaign_id):
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = VariantForm(request.POST)
    if form.is_valid():
        try:
            data = form.cleaned_data
            services.variant_add(
                campaign=campaign,
                node_name=data["node_name"],
                position=data["position"] or 1,
                name=data["name"],
                subject=data["subject"],
                template=data["template"],
                weight=data["weight"],
                format=data["format"],
            )
        except ValueError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, "Variant added.")
        return redirect(campaign)
    context = _campaign_context(campaign)
    context["variant_form"] = form
    context.update(send_panel_context(request, campaign))
    return render(request, "campaigns/campaign_detail.html", context, status=400)


@workspace_view(role=Role.ANALYST)
def campaign_edit(request, campaign_id):
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = CampaignForm(request.POST or None, instance=campaign)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Campaign saved.")
        return redirect(campaign)
    return render(request, "campaigns/campaign_form.html", {"form": form, "campaign": campaign})


@workspace_view(write_role=Role.OWNER)
def member_list(request):
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = services.member_invite(
                workspace=request.workspace,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=request.user,
                link_for=lambda token: request.build_absolute_uri(
                    reverse("invitation", kwargs={"token": token})
                ),
            )
        except services.MembershipError as error:
            form.add_error("email", str(error))
        else:
            # The same words whether or not the address has an account (it is not told).
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("campaigns:members", workspace_slug=request.workspace.slug)
    context = {
        "form": form,
        "members": Membership.objects.select_related("user"),
        "invitations": Invitation.objects.filter(accepted_at__isnull=True),
        "roles": Role.choices,
        "invitation_valid_days": settings.INVITATION_VALID_DAYS,
    }
    return render(request, "campaigns/members.html", context, status=400 if form.errors else 200)


@workspace_view(role=Role.OWNER)
@require_POST
def member_role(request, membership_id):
    membership = get_object_or_404(Membership, pk=membership_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.member_change_role(membership=membership, role=form.cleaned_data["role"])
            messages.success(request, f"{membership.user} is now {membership.get_role_display()}.")
        except services.MembershipError as error:
            messages.error(request, str(error))
    return redirect("campaigns:members", workspace_slug=request.workspace.slug)


@workspace_view(role=Role.OWNER)
@require_POST
def member_remove(request, membership_id):
    membership = get_object_or_404(Membership, pk=membership_id)
    try:
        services.member_remove(membership=membership)
        messages.success(request, f"{membership.user} was removed.")
    except services.MembershipError as error:
        messages.error(request, str(error))
    if membership.user_id == request.user.pk and membership.pk is None:
        return redirect("home")
    return redirect("campaigns:members", workspace_slug=request.workspace.slug)


@workspace_view(role=Role.OWNER)
@require_POST
def invitation_revoke(request, invitation_id):
    invitation = get_object_or_404(Invitation, pk=invitation_id, accepted_at__isnull=True)
    invitation.delete()
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("campaigns:members", workspace_slug=request.workspace.slug)


@workspace_view(write_role=Role.OWNER)
def workspace_settings(request):
    form = WorkspaceSettingsForm(request.POST or None, instance=request.workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("campaigns:settings", workspace_slug=request.workspace.slug)
    return render(request, "campaigns/settings.html", {"form": form})


# Why an invitation link was refused: the page's status and what it says.
INVITATION_REFUSALS = {
    "unknown": 404,
    "used": 410,
    "expired": 410,
    "other_address": 403,
}


def _invitation_refused(request, reason, invitation=None):
    context = {"reason": reason, "invitation": invitation}
    status = INVITATION_REFUSALS[reason]
    return render(request, "campaigns/invitation_refused.html", context, status=status)


def invitation(request, token):
    """Accept an invitation: join with the invited address's account, or create it.

    Refused with a page saying why (no membership, no account created) when the link
    names no invitation, was used, has expired, or the logged-in account has another
    address.
    """
    invitation = services.invitation_find(token)
    if invitation is None:
        return _invitation_refused(request, "unknown")
    user = request.user if request.user.is_authenticated else None
    form = SignupForm(request.POST or None, email=invitation.email) if user is None else None
    try:
        services.invitation_check(invitation, user)
        if request.method != "POST":
            return render(
                request, "campaigns/invitation.html", {"invitation": invitation, "form": form}
            )
        if user is None:
            if not form.is_valid():
                return render(
                    request,
                    "campaigns/invitation.html",
                    {"invitation": invitation, "form": form},
                    status=400,
                )
            user = services.invitation_signup(
                invitation=invitation,
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password"],
            )
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        else:
            services.invitation_accept(invitation=invitation, user=user)
    except services.InvitationRefused as refused:
        return _invitation_refused(request, refused.reason, invitation)
    messages.success(request, f"Welcome to {invitation.workspace.name}.")
    return redirect(invitation.workspace)


@workspace_view
def template_list(request):
    return render(request, "campaigns/template_list.html", {"templates": selectors.template_list()})


@workspace_view(role=Role.ANALYST)
def template_create(request):
    form = TemplateCreateForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.template_create(
                workspace=request.workspace,
                name=form.cleaned_data["name"],
                html=form.cleaned_data["html"],
                amp_html=form.cleaned_data["amp_html"],
                author=request.user,
                assets=form.cleaned_data["assets"],
            )
        except TemplateInputError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Template saved with {version.links.count()} links.")
            return redirect(version)
    return render(
        request,
        "campaigns/template_form.html",
        {"form": form, "template": None},
        status=400 if form.errors else 200,
    )


@workspace_view
def template_detail(request, template_id):
    template = get_object_or_404(Template, pk=template_id)
    return redirect(template.versions.order_by("-number").first())


@workspace_view(role=Role.ANALYST)
def template_edit(request, template_id):
    template = get_object_or_404(Template, pk=template_id)
    latest = template.versions.order_by("-number").first()
    form = TemplateContentForm(
        request.POST or None,
        request.FILES or None,
        initial={"html": latest.html, "amp_html": latest.amp_html},
    )
    if request.method == "POST" and form.is_valid():
        try:
            version, created = services.template_version_save(
                template=template,
                html=form.cleaned_data["html"],
                amp_html=form.cleaned_data["amp_html"],
                author=request.user,
                note=form.cleaned_data["note"],
                assets=form.cleaned_data["assets"],
            )
        except TemplateInputError as error:
            form.add_error(None, str(error))
        else:
            if created:
                messages.success(request, f"Saved as version {version.number}.")
            else:
                messages.info(request, "Nothing changed; no new version was saved.")
            return redirect(version)
    return render(
        request,
        "campaigns/template_form.html",
        {"form": form, "template": template},
        status=400 if form.errors else 200,
    )


@workspace_view
def version_detail(request, template_id, number):
    template = get_object_or_404(Template, pk=template_id)
    version = get_object_or_404(TemplateVersion, template=template, number=number)
    versions = list(template.versions.select_related("author").order_by("-number"))
    compare_to = request.GET.get("compare")
    base = next(
        (v for v in versions if str(v.number) == compare_to),
        next((v for v in versions if v.number < version.number), None),
    )
    links = version.links.select_related("twin").order_by("format", "ordinal")
    context = {
        **_images_context(version),
        "template": template,
        "version": version,
        "versions": versions,
        "links": links,
        "base": base,
        "diff": selectors.version_diff(base, version) if base and base != version else None,
        "latest": versions[0],
        "uses": selectors.version_uses(version),
    }
    return render(request, "campaigns/version_detail.html", context)


def _images_context(version):
    images = list(version.images.select_related("blob").defer("blob__data"))
    return {
        "images": images,
        "images_failed": sum(image.status == VersionImage.Status.FAILED for image in images),
        "images_pending": any(image.status == VersionImage.Status.PENDING for image in images),
    }


def _version(template_id, number):
    template = get_object_or_404(Template, pk=template_id)
    return get_object_or_404(TemplateVersion, template=template, number=number)


@workspace_view
def version_images_list(request, template_id, number):
    """The version's images and their state (htmx polls it while fetches are pending);
    POST (analysts) fetches the web images again."""
    version = _version(template_id, number)
    if request.method == "POST":
        count = version_images.version_images_refetch(version)
        if count:
            messages.success(request, f"Fetching {count} image{'s' if count != 1 else ''} again.")
        else:
            messages.info(request, "This version has no web images to fetch.")
        return redirect(f"{version.get_absolute_url()}#images-h")
    context = {"version": version, "template": version.template, **_images_context(version)}
    return render(request, "campaigns/partials/_version_images.html", context)


@workspace_view
def version_image(request, template_id, number, image_id):
    """A stored image's re-encoded bytes (never the original's), for the version page."""
    image = get_object_or_404(
        VersionImage.objects.select_related("blob"),
        pk=image_id,
        version=_version(template_id, number),
        blob__isnull=False,
    )
    response = HttpResponse(bytes(image.blob.data), content_type=image.blob.mime)
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
