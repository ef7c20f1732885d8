"""`manage.py export_clickmap ID --format csv|xlsx [--out FILE]`: the file the dashboard's
export button downloads for the same selection (a command-line contract: README, "The
click map").

The options are turned into the dashboard's own selection (clickmap.dashboard.Selection),
so the defaults are the page's defaults (first email node, HTML, click rate) and the
bytes come from the same writers (clickmap.exports). Exports reflect the rollups as they
are: run `manage.py aggregate` first to bring them up to date.
"""

import argparse
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django_scopes import scope as tenant_scope
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Segment, Variant
from clickmap import exports
from clickmap.dashboard import DEVICE_FILTERS, Selection


def _day(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"“{raw}” is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Export a campaign's click map as CSV or Excel: the file the dashboard's export "
        "button downloads for the same selection. Numbers are the rollups as they are; "
        "run `manage.py aggregate` first to bring them up to date."
    )

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int, metavar="ID", help="the campaign's id")
        parser.add_argument("--format", choices=("csv", "xlsx"), default="csv")
        parser.add_argument(
            "--out", metavar="FILE", help="write here (default: stdout; xlsx not to a terminal)"
        )
        parser.add_argument("--metric", choices=tuple(exports.METRICS), default="rate")
        parser.add_argument("--reliable-only", action="store_true")
        parser.add_argument(
            "--node", type=int, metavar="N", help="email node id (default: the first node)"
        )
        parser.add_argument("--variant", type=int, metavar="V", help="variant id of that node")
        parser.add_argument(
            "--compare",
            type=int,
            metavar="W",
            help="the compare view: variant W of that node beside --variant (or the first)",
        )
        parser.add_argument("--amp", action="store_true", help="the AMP part instead of HTML")
        parser.add_argument("--from", dest="date_from", type=_day, metavar="YYYY-MM-DD")
        parser.add_argument("--to", dest="date_to", type=_day, metavar="YYYY-MM-DD")
        parser.add_argument("--segment", type=int, metavar="S", help="segment id")
        parser.add_argument("--device", choices=DEVICE_FILTERS, help="clicks on this device only")

    def handle(self, *args, campaign_id, **options):
        with scopes_disabled():  # a command runs for the operator, across workspaces
            campaign = Campaign.objects.select_related("workspace").filter(pk=campaign_id).first()
        if campaign is None:
            raise CommandError(f"No campaign with id {campaign_id}.")
        with tenant_scope(workspace=campaign.workspace):
            selection = self.selection(campaign, options)
            self.export(selection, options["format"], options["out"])

    def selection(self, campaign: Campaign, options) -> Selection:
        """The dashboard selection for the options; anything the page would silently
        replace with a default is an error here."""
        nodes = dict(campaign.nodes.values_list("pk", "name"))
        node_id = options["node"]
        if node_id is not None and node_id not in nodes:
            listed = ", ".join(f"{pk} ({name})" for pk, name in nodes.items()) or "none"
            raise CommandError(
                f"Campaign {campaign.pk} has no email node {node_id}; its nodes: {listed}."
            )
        node = node_id or campaign.nodes.order_by("position").values_list("pk", flat=True).first()
        for option in ("variant", "compare"):
            variant_id = options[option]
            if (
                variant_id is not None
                and not Variant.objects.filter(pk=variant_id, node_id=node).exists()
            ):
                raise CommandError(f"Email node {node} has no variant {variant_id}.")
        if options["compare"] is not None and options["compare"] == options["variant"]:
            raise CommandError("--compare needs another variant than --variant.")
        segment = options["segment"]
        if segment is not None and not Segment.objects.filter(pk=segment).exists():
            raise CommandError(f"The campaign's workspace has no segment {segment}.")
        start, end = options["date_from"], options["date_to"]
        if start and end and start > end:
            raise CommandError(f"The period ends ({end}) before it starts ({start}).")
        query = {
            "metric": options["metric"],
            "node": node_id,
            "variant": options["variant"],
            "compare": options["compare"],
            "format": "amp" if options["amp"] else "html",
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "reliable": "1" if options["reliable_only"] else None,
            "segment": segment,
            "device": options["device"],
        }
        selection = Selection.from_query(campaign, {k: v for k, v in query.items() if v})
        if selection.problems:
            raise CommandError(" ".join(selection.problems))
        return selection

    def export(self, selection: Selection, fmt: str, out: str | None) -> None:
        scope, metric = selection.scope(), selection.metric
        compare = selection.compare_scope() if selection.compared else None
        if out:
            with open(out, "wb") as file:
                writer = exports.write_xlsx if fmt == "xlsx" else exports.write_csv
                writer(scope, file, metric, compare)
            self.stderr.write(f"Wrote {out}")
            return
        binary = getattr(self.stdout, "buffer", None)
        if fmt == "xlsx":
            if binary is None or self.stdout.isatty():
                raise CommandError("Excel files are binary: give --out FILE or redirect stdout.")
            self.stdout.flush()
            exports.copy_xlsx(scope, binary, metric, compare)
            binary.flush()
        elif binary is not None:
            self.stdout.flush()
            exports.write_csv(scope, binary, metric, compare)
            binary.flush()
        else:  # a text stream (call_command(stdout=StringIO())): same characters
            for chunk in exports.csv_chunks(scope, metric, compare):
                self.stdout.write(chunk.decode(), ending="")
