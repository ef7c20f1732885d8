import os

from django.core.management.base import BaseCommand

from clickmap.demo import seed_demo


class Command(BaseCommand):
    help = "Create the demo workspace with campaigns and a demo owner (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            default=os.environ.get("DEMO_PASSWORD", "clickmap-demo"),
            help="Password for the demo user (default: $DEMO_PASSWORD or clickmap-demo).",
        )

    def handle(self, *args, password, **options):
        login = seed_demo(password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo workspace “{login.workspace.name}” is ready.\n"
                f"Log in at http://127.0.0.1:8000/ as  user: {login.username}  "
                f"password: {login.password}"
            )
        )
