import os

from django.core.management.base import BaseCommand

from clickmap.demo import CUSTOMERS, seed_demo


class Command(BaseCommand):
    help = "Create the demo workspace: campaigns, customers, clicks, previews (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            default=os.environ.get("DEMO_PASSWORD", "clickmap-demo"),
            help="Password for the demo user (default: $DEMO_PASSWORD or clickmap-demo).",
        )
        parser.add_argument("--customers", type=int, default=CUSTOMERS)
        parser.add_argument(
            "--no-previews", action="store_true", help="Do not render previews now."
        )

    def handle(self, *args, password, customers, no_previews, **options):
        login = seed_demo(password, customers=customers, render_previews=not no_previews)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo workspace “{login.workspace.name}” is ready.\n"
                f"Log in at http://127.0.0.1:8000/ as  user: {login.username}  "
                f"password: {login.password}"
            )
        )
