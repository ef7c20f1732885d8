from django.core.management.base import BaseCommand

from clickmap.rollups import recompute


class Command(BaseCommand):
    help = "Rebuild every rollup from the raw events."

    def handle(self, *args, **options):
        report = recompute()
        self.stdout.write(f"rebuilt from {report.changes} changes ({report.pairs} link pairs)")
