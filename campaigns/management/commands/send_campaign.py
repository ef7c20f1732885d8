from django.core.management.base import BaseCommand, CommandError
from django_scopes import scope

from campaigns.models import Campaign
from campaigns.sending import SendInProgress, SmtpUnavailable, send_campaign


class Command(BaseCommand):
    help = "Send a campaign through the configured SMTP (idempotent: nobody gets it twice)."

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)

    def handle(self, *args, campaign_id, **options):
        campaign = (
            Campaign.objects.with_scopes_disabled()
            .select_related("workspace")
            .filter(pk=campaign_id)
            .first()
        )
        if campaign is None:
            raise CommandError(f"No campaign with id {campaign_id}.")

        def progress(report):
            self.stdout.write(f"  sent {report.sent}, failed {report.failed}…")

        with scope(workspace=campaign.workspace):
            try:
                report = send_campaign(campaign, progress=progress)
            except (SendInProgress, SmtpUnavailable, ValueError) as error:
                raise CommandError(str(error)) from error
        self.stdout.write(
            self.style.SUCCESS(
                f"“{campaign.name}”: {report.sent} sent, {report.failed} failed, "
                f"{report.planned} newly planned, {report.resumed} resumed after an "
                f"interruption, {report.skipped} interrupted while handed over (not resent)."
            )
        )
        for error in report.errors:
            self.stdout.write(self.style.WARNING(f"  {error}"))
