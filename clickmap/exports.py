"""Click-map exports: the link table as CSV or Excel, the same bytes wherever asked.

The dashboard's export button (clickmap.views.export) and `manage.py export_clickmap`
call the same writers, so one scope and one metric give one file. The numbers come from
clickmap.metrics only and reflect the rollups as they are (`manage.py aggregate` brings
them up to date); nothing here recounts.

CSV is one plain table for machines: the header row, then one row per link, ranked.
Comma-separated, CRLF line ends (RFC 4180), UTF-8 *without* a BOM (a BOM turns the first
header into "\\ufeffRank" for most CSV readers; spreadsheet users get the XLSX), '.'
decimals, percentages in percent units with the 4 decimals metrics rounds them to. Text
starting with = + - @ tab or CR gets a leading apostrophe (OWASP CSV injection).

XLSX has the same table on sheet "Links" (numbers as numbers, percentages as Excel
percents) and the scope and email totals on sheet "Summary". Text is written as text,
never as a formula or a link. The document date is fixed, so the same data gives the
same bytes.
"""

import csv
import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import xlsxwriter
from django.http import FileResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django_scopes import scope as tenant_scope

from campaigns.models import (
    Campaign,
    Customer,
    EmailNode,
    Template,
    TemplateLink,
    TemplateVersion,
    Variant,
)
from clickmap import metrics
from tracking.models import DeviceClass

METRICS = {
    "rate": "Click rate",
    "unique": "Unique clicks",
    "total": "Total clicks",
    "share": "Click share",
}
HEADER = (
    "Rank",
    "Link #",
    "Template version",
    "Format",
    "Text",
    "Destination",
    "Position (XPath)",
    "Kind",
    "Outlook only",
    "Shown on link #",
    "Unsubscribe",
    "Total clicks",
    "Unique clicks",
    "Click rate %",
    "Click share %",
    "% of unique clicks",
)
PERCENT_COLUMNS = frozenset({13, 14, 15})
COLUMN_WIDTHS = (6, 7, 20, 7, 30, 40, 40, 6, 8, 9, 11, 11, 11, 11, 11, 11)
# OWASP "CSV Injection": cells starting with these are formulas in spreadsheet apps.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_CHUNK_CHARS = 16 * 1024
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# XlsxWriter stamps "now" otherwise, which would make every download differ.
DOCUMENT_DATE = datetime(2000, 1, 1, tzinfo=UTC)
CLICKERS_HEADER = (
    "Email",
    "Customer id",
    "First click (UTC)",
    "Last click (UTC)",
    "Clicks",
    "Reliable clicks",
)


def export_rows(scope: metrics.Scope, metric: str = "rate") -> tuple[tuple, Iterator[tuple]]:
    """The export table: (HEADER, rows), ranked by `metric`, highest first.

    `metric` is "rate", "unique", "total" or "share"; ties keep inventory order (version,
    format, ordinal). Each row has the HEADER's columns: rank (1…n, the row's place),
    link # (ordinal + 1), the template version ("Name vN": A/B variants may send
    different versions, each numbering its own links), format, text, href as written,
    XPath, kind (a, area, vml), "yes"/"no" for
    Outlook-only, the twin's link # (None without one), "yes"/"no" for unsubscribe, then
    total, unique, rate, share and unique share exactly as metrics.link_metrics gives
    them (percentages in percent units). The rows are lazy: the queries run on the first
    pull, so the workspace's scope must be active then.
    """
    _check_metric(metric)
    return HEADER, _rows(scope, metric)


def _rows(scope: metrics.Scope, metric: str) -> Iterator[tuple]:
    found = metrics.link_metrics(scope)
    ordinal_of = {m.link.pk: m.link.ordinal for m in found}
    # A twin is in the same version and format, so normally already here.
    missing = {m.link.twin_id for m in found if m.link.twin_id} - ordinal_of.keys()
    if missing:
        ordinal_of.update(TemplateLink.objects.filter(pk__in=missing).values_list("pk", "ordinal"))
    versions = {
        v.pk: str(v)
        for v in TemplateVersion.objects.filter(
            pk__in={m.link.version_id for m in found}
        ).select_related("template")
    }
    ranked = sorted(found, key=lambda m: (-getattr(m, metric), m.link.ordinal))
    for rank, m in enumerate(ranked, 1):
        link = m.link
        twin = ordinal_of.get(link.twin_id) if link.twin_id else None
        yield (
            rank,
            link.ordinal + 1,
            versions[link.version_id],
            link.format,
            link.text,
            link.href,
            link.xpath,
            link.kind,
            _yes_no(link.mso),
            twin + 1 if twin is not None else None,
            _yes_no(link.unsubscribe),
            m.total,
            m.unique,
            m.rate,
            m.share,
            m.unique_share,
        )


def csv_chunks(scope: metrics.Scope, metric: str = "rate") -> Iterator[bytes]:
    """The CSV file as UTF-8 chunks of about 16 KB, produced as the rows are.

    A generator: nothing is queried before the first pull, and the workspace's scope must
    be active at every pull (csv_streaming_response sees to that).
    """
    header, rows = export_rows(scope, metric)
    yield from _csv_stream(header, rows)


def write_csv(scope: metrics.Scope, file, metric: str = "rate") -> None:
    """Write the CSV export to `file`, a binary file object (see csv_chunks)."""
    for chunk in csv_chunks(scope, metric):
        file.write(chunk)


def csv_streaming_response(
    scope: metrics.Scope, filename: str, metric: str = "rate"
) -> StreamingHttpResponse:
    """The CSV export as a download, streamed while the rows are produced.

    The body is generated after the view has returned, when its workspace scope has
    closed, so every pull re-enters the scope of `scope.workspace`.
    """
    _check_metric(metric)
    response = StreamingHttpResponse(
        _scoped(scope.workspace, csv_chunks(scope, metric)), content_type=CSV_CONTENT_TYPE
    )
    response.headers["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def write_xlsx(scope: metrics.Scope, file, metric: str = "rate") -> None:
    """Write the Excel export to `file` (a path, or a seekable binary file object).

    Sheet "Links": the export_rows table, percentages as Excel percents; sheet
    "Summary": what the scope selects and the email totals. Rows go to disk as they are
    written (constant_memory), so the size of the email does not matter. Runs its
    queries at once: the workspace's scope must be active.
    """
    header, rows = export_rows(scope, metric)
    workbook = xlsxwriter.Workbook(
        file,
        {
            "constant_memory": True,
            # Belt and braces: every text cell goes through write_string anyway.
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    workbook.set_properties({"title": "Click map", "created": DOCUMENT_DATE})
    bold = workbook.add_format({"bold": True})
    percent = workbook.add_format({"num_format": "0.00%"})

    sheet = workbook.add_worksheet("Links")
    for column, width in enumerate(COLUMN_WIDTHS):
        sheet.set_column(column, column, width)
    sheet.freeze_panes(1, 0)
    for column, title in enumerate(header):
        sheet.write_string(0, column, title, bold)
    last = 0
    for last, row in enumerate(rows, 1):
        for column, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, str):
                sheet.write_string(last, column, value)
            elif column in PERCENT_COLUMNS:
                sheet.write_number(last, column, value / 100, percent)
            else:
                sheet.write_number(last, column, value)
    sheet.autofilter(0, 0, last, len(header) - 1)

    summary = workbook.add_worksheet("Summary")
    summary.set_column(0, 0, 22)
    summary.set_column(1, 1, 40)
    line = 0
    for title, lines in (
        ("Scope", describe_scope(scope, metric)),
        ("Email totals", _totals_lines(metrics.email_totals(scope))),
    ):
        summary.write_string(line, 0, title, bold)
        line += 1
        for label, value in lines:
            summary.write_string(line, 0, label)
            if isinstance(value, str):
                summary.write_string(line, 1, value)
            elif isinstance(value, float):
                summary.write_number(line, 1, value / 100, percent)
            else:
                summary.write_number(line, 1, value)
            line += 1
        line += 1
    workbook.close()


def xlsx_response(scope: metrics.Scope, filename: str, metric: str = "rate") -> FileResponse:
    """The Excel export as a download: written to a temporary file now (inside the view's
    scope), then sent from disk; the file vanishes when the response is closed."""
    _check_metric(metric)
    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    try:
        write_xlsx(scope, tmp, metric)
        tmp.seek(0)
    except BaseException:
        tmp.close()
        raise
    return FileResponse(tmp, as_attachment=True, filename=filename, content_type=XLSX_CONTENT_TYPE)


def copy_xlsx(scope: metrics.Scope, stream, metric: str = "rate") -> None:
    """Write the Excel export to a stream that may not seek (a pipe).

    A zip written to an unseekable stream gets different bytes (data descriptors), so
    it is written to a temporary file first: the bytes equal write_xlsx's to a file.
    """
    with tempfile.TemporaryFile() as tmp:
        write_xlsx(scope, tmp, metric)
        tmp.seek(0)
        shutil.copyfileobj(tmp, stream)


def describe_scope(scope: metrics.Scope, metric: str = "rate") -> list[tuple[str, str]]:
    """(label, value) lines saying what the scope selects, for people reading an export."""

    def name(model, pk, everything, show=str):
        if not pk:
            return everything
        obj = model.objects.filter(pk=pk).first()
        return show(obj) if obj is not None else f"#{pk} (deleted)"

    lines = []
    if scope.template_id:  # a template report: every campaign that used it
        lines.append(("Template", name(Template, scope.template_id, "—")))
    else:
        lines.append(("Campaign", name(Campaign, scope.campaign_id, "all campaigns")))
    period = "all time"
    if scope.date_from or scope.date_to:
        start = scope.date_from.isoformat() if scope.date_from else "…"
        end = scope.date_to.isoformat() if scope.date_to else "…"
        period = f"{start} – {end} (UTC days)"
    device = str(dict(DeviceClass.choices).get(scope.device, scope.device or "all devices"))
    lines += [
        ("Email node", name(EmailNode, scope.node_id, "all nodes", lambda n: n.name)),
        ("Variant", name(Variant, scope.variant_id, "all variants", lambda v: v.name)),
        ("Template version", name(TemplateVersion, scope.version_id, "all versions")),
        ("Format", scope.format.upper() if scope.format else "HTML and AMP"),
        ("Period", period),
        ("Reliable clicks only", _yes_no(scope.reliable_only)),
        ("Segment", scope.segment.name if scope.segment is not None else "everyone"),
        ("Customer", name(Customer, scope.customer_id, "everyone")),
        ("Device", device),
        ("Ranked by", METRICS[metric]),
    ]
    return lines


def _totals_lines(totals: metrics.EmailTotals) -> list[tuple[str, int | float]]:
    # Floats are percentages (written in percent format); ints are counts.
    return [
        ("Sent", totals.sent),
        ("Delivered", totals.delivered),
        ("Unique opens", totals.unique_opens),
        ("Machine opens", totals.machine_opens),
        ("Clickers", totals.clickers),
        ("CTR", float(totals.ctr)),
        ("CTOR", float(totals.ctor)),
        ("Unsubscribes", totals.unsubscribes),
        ("Total clicks", totals.total_clicks),
    ]


def clickers_csv_response(clickers, filename: str, workspace) -> StreamingHttpResponse:
    """Who clicked a link (rows of metrics.link_clickers) as a streamed CSV download,
    with the same CSV conventions as the link export."""

    def rows():
        for row in clickers.iterator(chunk_size=2000):
            yield (
                row["delivery__customer__email"],
                row["delivery__customer__external_id"],
                _utc(row["first"]),
                _utc(row["last"]),
                row["clicks"],
                row["reliable_clicks"],
            )

    response = StreamingHttpResponse(
        _scoped(workspace, _csv_stream(CLICKERS_HEADER, rows())), content_type=CSV_CONTENT_TYPE
    )
    response.headers["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def _csv_stream(header: tuple, rows: Iterable[tuple]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # excel dialect: comma, minimal quoting, CRLF
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
        if buffer.tell() >= CSV_CHUNK_CHARS:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_TRIGGERS) else value
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _scoped(workspace, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pull `chunks` with the workspace's scope active only while each chunk is made,
    so the scope never stays set in the server's thread between chunks."""
    try:
        while True:
            with tenant_scope(workspace=workspace):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: one of {', '.join(METRICS)}.")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""
