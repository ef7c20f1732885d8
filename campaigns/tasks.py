from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django_scopes import scope, scopes_disabled

from campaigns.customer_import import run_import
from campaigns.models import Campaign, CustomerImport, TemplateVersion
from campaigns.scheduling import start_due_sends
from campaigns.sending import send_campaign
from campaigns.version_images import version_images_fetch


@shared_task(
    name="campaigns.send_campaign",
    acks_late=False,  # a send killed at its hard limit is not redelivered over and over
    soft_time_limit=settings.SEND_SOFT_TIME_LIMIT,
    time_limit=settings.SEND_TIME_LIMIT,
)
def send_campaign_task(campaign_id: int) -> dict:
    """Send a campaign (idempotent: a retried or repeated task mails nobody twice).

    At the soft time limit the run stops where it is (what it had not handed to SMTP
    goes back to the queue) and queues its own continuation, behind the sends queued
    meanwhile: a big campaign takes turns with the other workspaces' sends.

    Locking the campaign's row first waits for the transaction that queued this task
    (campaigns/scheduling.py); a campaign scheduled or cancelled by then is not sent."""
    with scopes_disabled(), transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(of=("self",), no_key=True)
            .select_related("workspace")
            .filter(pk=campaign_id)
            .first()
        )
    if campaign is None or campaign.status in (
        Campaign.Status.SCHEDULED,
        Campaign.Status.CANCELLED,
    ):
        return {"skipped": campaign.status if campaign else "deleted"}
    try:
        with scope(workspace=campaign.workspace):
            report = send_campaign(campaign)
    except SoftTimeLimitExceeded:
        send_campaign_task.delay(campaign_id)
        return {"continued": True}
    return {"planned": report.planned, "sent": report.sent, "failed": report.failed}


@shared_task(name="campaigns.fetch_version_images", ignore_result=True, soft_time_limit=1800)
def fetch_version_images_task(version_id: int) -> int:
    """Fetch a template version's pending web images (idempotent: settled rows stay)."""
    version = (
        TemplateVersion.objects.with_scopes_disabled()
        .select_related("template__workspace")
        .filter(pk=version_id)
        .first()
    )
    if version is None:
        return 0
    with scope(workspace=version.template.workspace):
        return version_images_fetch(version)


@shared_task(name="campaigns.import_customers", ignore_result=True)
def import_customers_task(import_id: int) -> None:
    """Run a queued customer import (idempotent: a finished import is left as it is)."""
    customer_import = (
        CustomerImport.objects.with_scopes_disabled()
        .select_related("workspace")
        .filter(pk=import_id)
        .first()
    )
    if customer_import is None:
        return
    with scope(workspace=customer_import.workspace):
        run_import(customer_import)


@shared_task(name="campaigns.start_due_sends", ignore_result=True)
def start_due_sends_task() -> list[int]:
    """Start the scheduled sends that are due (celery beat, every few seconds)."""
    return start_due_sends()
