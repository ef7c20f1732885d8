"""``python manage.py inventory FILE.html [--json]``: the link inventory of one file.

Needs no database. JSON output is a list of objects with every InventoryLink field
(xpath, href, text, kind, mso, twin_xpath, unsubscribe, trackable, placeholder,
format, ordinal, source_index).
"""

import dataclasses
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.inventory import FORMATS, TemplateInputError, inventory_links, read_template_file

_COLUMNS = (("#", 3), ("kind", 4), ("flags", 9), ("href", 48), ("text", 28), ("xpath", 0))


class Command(BaseCommand):
    help = "Print the link inventory of a standalone HTML template (no database needed)."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("file", help="the HTML (or AMP HTML) template file")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="print JSON instead of a table"
        )
        parser.add_argument(
            "--format", choices=FORMATS, default="html", help="the email part (default html)"
        )

    def handle(self, *args, file, as_json: bool, format: str, **options):
        try:
            html = read_template_file(Path(file))
            rows = inventory_links(html, format)
        except TemplateInputError as error:
            raise CommandError(f"{file}: {error}") from None
        if as_json:
            self.stdout.write(_as_json(rows))
        else:
            self.stdout.write(_as_table(rows))


def _as_json(rows) -> str:
    return json.dumps([dataclasses.asdict(row) for row in rows], ensure_ascii=False, indent=2)


def _flags(row) -> str:
    flags = [
        "mso" if row.mso else "",
        "unsub" if row.unsubscribe else "",
        "" if row.trackable else "notrack",
        "{{}}" if row.placeholder else "",
    ]
    return ",".join(flag for flag in flags if flag) or "-"


def _cell(text: str, width: int) -> str:
    if not width:
        return text
    return text if len(text) <= width else text[: width - 1] + "…"


def _as_table(rows) -> str:
    if not rows:
        return "No links found."
    lines = ["  ".join(_cell(name, width).ljust(width) for name, width in _COLUMNS).rstrip()]
    for row in rows:
        xpath = row.xpath + (f"  (twin {row.twin_xpath})" if row.twin_xpath else "")
        values = (str(row.ordinal), row.kind, _flags(row), row.href, row.text, xpath)
        lines.append(
            "  ".join(
                _cell(value, width).ljust(width)
                for value, (_name, width) in zip(values, _COLUMNS, strict=True)
            ).rstrip()
        )
    lines.append(f"{len(rows)} links")
    return "\n".join(lines)
