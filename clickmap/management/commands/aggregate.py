from django.core.management.base import BaseCommand

from clickmap.rollups import aggregate
from tracking.ingest import ingest_spool


class Command(BaseCommand):
    help = "Bring all rollups up to date now (ingests the tracking spool first)."

    def handle(self, *args, **options):
        ingested = ingest_spool()
        report = aggregate()
        self.stdout.write(
            f"ingested {ingested.clicks} clicks and {ingested.opens} opens; applied "
            f"{report.changes} changes ({report.pairs} link pairs, {report.recipients} "
            f"recipients) in {report.batches} batches"
        )
