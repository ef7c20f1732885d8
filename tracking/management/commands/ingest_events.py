import time

from django.core.management.base import BaseCommand

from tracking.ingest import ingest_spool


class Command(BaseCommand):
    help = "Move spooled click and open events into the database (once, or --follow)."

    def add_arguments(self, parser):
        parser.add_argument("--follow", action="store_true", help="Keep ingesting every second.")
        parser.add_argument("--interval", type=float, default=1.0)

    def handle(self, *args, follow, interval, **options):
        while True:
            report = ingest_spool()
            if report.files or not follow:
                self.stdout.write(
                    f"ingested {report.clicks} clicks and {report.opens} opens "
                    f"from {report.files} files ({report.dropped} dropped, "
                    f"{report.bad_lines} bad lines, {report.reclassified} reclassified)"
                )
                for loss in report.lost:
                    self.stderr.write(f"lost: {loss}")
            if not follow:
                return
            time.sleep(interval)
