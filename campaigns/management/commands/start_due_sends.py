import time

from django.core.management.base import BaseCommand

from campaigns.scheduling import start_due_sends


class Command(BaseCommand):
    help = (
        "Start the scheduled sends that are due (what celery beat does every 5 s). "
        "With --every N, keep doing it every N seconds: the embedded default's beat."
    )

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="seconds between runs")

    def handle(self, *args, every, **options):
        while True:
            for campaign_id in start_due_sends():
                self.stdout.write(f"started the scheduled send of campaign {campaign_id}")
            if every <= 0:
                return
            time.sleep(every)
