from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from clickmap import embedded_db


class Command(BaseCommand):
    help = (
        "Start, stop or show the embedded PostgreSQL server (DATABASE_URL unset). "
        "Connections start it anyway; it keeps running until stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args, action, **options):
        database = settings.DATABASES["default"]
        if "DATA_DIR" not in database:
            raise CommandError("DATABASE_URL is set: there is no embedded server to manage.")
        data_dir = Path(database["DATA_DIR"])
        if action == "start":
            socket_dir = embedded_db.start(data_dir, database["NAME"])
            self.stdout.write(f"running: {data_dir} (socket in {socket_dir})")
        elif action == "stop":
            stopped = embedded_db.stop(data_dir)
            self.stdout.write("stopped" if stopped else "not running")
        else:
            socket_dir = embedded_db.socket_dir(data_dir)
            self.stdout.write(f"running (socket in {socket_dir})" if socket_dir else "not running")
