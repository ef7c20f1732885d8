from django.core.management.base import BaseCommand

from clickmap.rollups import BATCH_SIZE, aggregate_now
from tracking.ingest import ingest_spool


class Command(BaseCommand):
    help = "Bring all rollups up to date now (ingests the tracking spool first)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args, batch_size, **options):
        ingested = ingest_spool()
        report = aggregate_now(batch_size=batch_size)
        self.stdout.write(
            f"ingested {ingested.clicks} clicks and {ingested.opens} opens; applied "
            f"{report.changes} changes ({report.pairs} link pairs, {report.recipients} "
            f"recipients) in {report.batches} batches"
        )
