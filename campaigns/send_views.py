"""A campaign's send panel: sender settings, test sends, audience, confirm, schedule,
cancel. Thin: the work is in campaigns/scheduling.py and campaigns/test_sends.py."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from campaigns.models import Campaign, EmailNode, Role
from campaigns.scheduling import (
    ScheduleError,
    local_text,
    recipient_count,
    send_cancel,
    send_resume,
    send_schedule,
    send_start,
)
from campaigns.send_forms import SenderForm, SendForm, TestSendForm
from campaigns.sending import SendInProgress, SmtpUnavailable, send_progress
from campaigns.tenancy import workspace_view
from campaigns.test_sends import TestSendError, parse_addresses, personalising_customer, send_test


def send_panel_context(request, campaign, **forms) -> dict:
    """What templates/campaigns/partials/_send_panel.html needs."""
    nodes = list(campaign.nodes.order_by("position"))
    zone = request.workspace.time_zone
    return {
        "send_form": forms.get("send_form")
        or SendForm(initial={"segment": campaign.segment_id}, workspace=request.workspace),
        "test_form": forms.get("test_form") or TestSendForm(),
        "sender_forms": [
            (
                node,
                forms["sender_form"]
                if forms.get("sender_node") == node.pk
                else SenderForm(instance=node, prefix=f"n{node.pk}"),
            )
            for node in nodes
        ],
        "test_sends": list(campaign.test_sends.order_by("-created_at")[:5]),
        "scheduled_local": local_text(campaign.scheduled_at, zone) if campaign.scheduled_at else "",
        "progress": send_progress(campaign),
    }


def _campaign(campaign_id) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("segment"), pk=campaign_id)


def _detail_again(request, campaign, status=400, **forms):
    """The campaign page with a form's errors (the page's own context, plus the panel's)."""
    from campaigns.views import campaign_page_context

    context = campaign_page_context(campaign)
    context.update(send_panel_context(request, campaign, **forms))
    return render(request, "campaigns/campaign_detail.html", context, status=status)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_send(request, campaign_id):
    """Step 1 (audience and time posted): the confirmation page with the exact number of
    recipients. Step 2 (`confirm` with the number shown): start or schedule, unless the
    number changed meanwhile, which shows the confirmation again with the new one."""
    campaign = _campaign(campaign_id)
    form = SendForm(request.POST, workspace=request.workspace)
    if not form.is_valid():
        return _detail_again(request, campaign, send_form=form)
    segment, at = form.cleaned_data["segment"], form.cleaned_data["at"]
    count = recipient_count(campaign, segment)
    shown = request.POST.get("expected", "")
    if "confirm" not in request.POST or shown != str(count):
        context = {
            "campaign": campaign,
            "form": form,
            "segment": segment,
            "at": at,
            "at_local": local_text(at, request.workspace.time_zone) if at else "",
            "count": count,
            "changed": "confirm" in request.POST and shown != str(count),
            "shown": shown,
        }
        return render(request, "campaigns/send_confirm.html", context)
    try:
        if at is None:
            send_start(campaign, segment=segment)
            messages.success(request, f"Sending to {count} recipients. Progress updates below.")
        else:
            send_schedule(campaign, at, segment=segment)
            messages.success(
                request, f"Scheduled for {local_text(at, request.workspace.time_zone)}."
            )
    except (ScheduleError, SendInProgress, SmtpUnavailable) as error:
        # SendInProgress and SmtpUnavailable come here when tasks run inline.
        messages.error(request, str(error))
    return redirect(campaign)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_send_resume(request, campaign_id):
    campaign = _campaign(campaign_id)
    try:
        send_resume(campaign)
    except (ScheduleError, SendInProgress, SmtpUnavailable) as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Resumed: whoever has not been mailed yet is mailed now.")
    return redirect(campaign)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_send_cancel(request, campaign_id):
    campaign = _campaign(campaign_id)
    try:
        send_cancel(campaign)
    except ScheduleError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "The scheduled send is cancelled. Nobody was mailed.")
    return redirect(campaign)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_test_send(request, campaign_id):
    campaign = _campaign(campaign_id)
    form = TestSendForm(request.POST)
    if form.is_valid():
        try:
            addresses = parse_addresses(form.cleaned_data["addresses"])
            customer = personalising_customer(campaign, form.cleaned_data["customer"])
            record = send_test(campaign, addresses, customer=customer, user=request.user)
        except TestSendError as error:
            form.add_error("addresses", str(error))
        else:
            if record.failed:
                messages.error(
                    request, f"Test: {record.sent} sent, {record.failed} failed: {record.errors[0]}"
                )
            else:
                messages.success(request, f"Test sent to {', '.join(addresses)}.")
            return redirect(campaign)
    return _detail_again(request, campaign, test_form=form)


@workspace_view(role=Role.ANALYST)
@require_POST
def campaign_sender(request, campaign_id, node_id):
    campaign = _campaign(campaign_id)
    node = get_object_or_404(EmailNode, pk=node_id, campaign=campaign)
    form = SenderForm(request.POST, instance=node, prefix=f"n{node.pk}")
    if form.is_valid():
        form.save()
        messages.success(request, f"Sender of “{node.name}” saved.")
        return redirect(campaign)
    return _detail_again(request, campaign, sender_form=form, sender_node=node.pk)
