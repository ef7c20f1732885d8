from django.core.management.base import BaseCommand, CommandError
from django_scopes import scope

from campaigns.customer_import import ImportFileError, import_customers
from campaigns.models import Workspace


class Command(BaseCommand):
    help = (
        "Upsert customers from a CSV or XLSX file; prints created/updated/skipped/failed and "
        "writes the rows not imported, with line number and reason, to FILE.errors.csv."
    )

    def add_arguments(self, parser):
        parser.add_argument("workspace_slug")
        parser.add_argument("file")
        parser.add_argument("--key", choices=["email", "external_id"], default="email")

    def handle(self, *args, workspace_slug, file, key, **options):
        workspace = Workspace.objects.filter(slug=workspace_slug).first()
        if workspace is None:
            raise CommandError(f"No workspace with the slug “{workspace_slug}”.")
        errors_path = f"{file}.errors.csv"

        def progress(percent, rows):
            if options["verbosity"] > 1:
                self.stderr.write(f"  {percent}% ({rows} rows read)")

        with scope(workspace=workspace):
            try:
                summary = import_customers(
                    workspace, file, key=key, errors_path=errors_path, progress=progress
                )
            except ImportFileError as error:
                raise CommandError(str(error)) from error
        self.stdout.write(summary.line())
        if options["verbosity"] > 1:
            phases = ", ".join(f"{name} {sec:.2f}s" for name, sec in summary.seconds.items())
            self.stderr.write(f"  time: {phases}")
        if summary.skipped or summary.failed:
            self.stdout.write(f"Rows not imported, with line and reason: {errors_path}")
