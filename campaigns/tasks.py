from celery import shared_task
from django_scopes import scope

from campaigns.models import Campaign
from campaigns.sending import send_campaign


@shared_task(name="campaigns.send_campaign", acks_late=False)
def send_campaign_task(campaign_id: int) -> dict:
    """Send a campaign (idempotent: a retried or repeated task mails nobody twice)."""
    campaign = (
        Campaign.objects.with_scopes_disabled().select_related("workspace").get(pk=campaign_id)
    )
    with scope(workspace=campaign.workspace):
        report = send_campaign(campaign)
    return {"planned": report.planned, "sent": report.sent, "failed": report.failed}
