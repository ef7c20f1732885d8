"""Click-map exports: the link table as CSV or Excel, the same bytes wherever asked.

The dashboard's export button (clickmap.views.export) and `manage.py export_clickmap`
call the same writers, so one scope and one metric give one file. The numbers come from
clickmap.metrics only and reflect the rollups as they are (`manage.py aggregate` brings
them up to date); nothing here recounts.

CSV is one plain table for machines: the header row, then one row per link, ranked (or,
for the compare view, the whole email and then each link paired across two variants).
Comma-separated, CRLF line ends (RFC 4180), UTF-8 *without* a BOM (a BOM turns the first
header into "\\ufeffRank" for most CSV readers; spreadsheet users get the XLSX), '.'
decimals, percentages in percent units with the 4 decimals metrics rounds them to,
p-values with 6. Text
starting with = + - @ tab or CR gets a leading apostrophe (OWASP CSV injection).

XLSX has the same table on sheet "Links" or "Compare" (numbers as numbers, percentages as Excel
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

from campaigns.csv_cells import formula_safe
from campaigns.models import (
    Campaign,
    Customer,
    EmailNode,
    Template,
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
    "Unsubscribe",
    "Outlook-only copies",
    "Outlook-only clicks",
    "Total clicks",
    "Unique clicks",
    "Click rate %",
    "Click share %",
    "% of unique clicks",
)
COLUMN_WIDTHS = (6, 7, 20, 7, 30, 40, 40, 6, 11, 10, 10, 11, 11, 11, 11, 11)
COMPARE_HEADER = (
    "Link # (A)",
    "Link # (B)",
    "Text",
    "Destination",
    "Change in B",
    "A: total clicks",
    "A: unique clicks",
    "A: click rate %",
    "B: total clicks",
    "B: unique clicks",
    "B: click rate %",
    "Difference (points)",
    "p-value",
    "Significant",
)
COMPARE_WIDTHS = (8, 8, 30, 40, 10, 10, 10, 10, 10, 10, 10, 12, 10, 10)
PERCENT_HEADERS = frozenset(
    {
        "Click rate %",
        "Click share %",
        "% of unique clicks",
        "A: click rate %",
        "B: click rate %",
    }
)
# The compare table's first row: the email as a whole (its clickers and CTR).
WHOLE_EMAIL = "Whole email (clickers, CTR)"
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


def export_rows(
    scope: metrics.Scope, metric: str = "rate", compare: metrics.Scope | None = None
) -> tuple[tuple, Iterator[tuple]]:
    """The export table: (header, rows), lazily (the queries run on the first pull, so
    the workspace's scope must be active then).

    The link table (HEADER): one row per link the click map shows (metrics.link_table:
    an Outlook-only copy folded into its visible twin), ranked by ``metric``, highest
    first, ties in inventory order: rank, link # (ordinal + 1), the template version
    ("Name vN"), format, text, href as written, XPath, kind (a, area, vml), "yes"/"no"
    for unsubscribe, the folded Outlook-only copies' link #s and their clicks, then
    total, unique, rate, share and unique share exactly as the map shows them
    (percentages in percent units).

    With ``compare`` (the compare view, COMPARE_HEADER): the email as a whole, then one
    row per link paired across the two variants (metrics.compare), with each side's
    numbers, B's rate minus A's in points, the p-value and "yes"/"no" for significant.
    """
    _check_metric(metric)
    if compare is not None:
        return COMPARE_HEADER, _compare_rows(scope, compare, metric)
    return HEADER, _rows(scope, metric)


def _rows(scope: metrics.Scope, metric: str) -> Iterator[tuple]:
    table = metrics.link_table(scope, metric)
    versions = _version_names(row.link for row in table)
    for row in table:
        link = row.link
        yield (
            row.rank,
            link.ordinal + 1,
            versions[link.version_id],
            link.format,
            link.text,
            link.href,
            link.xpath,
            link.kind,
            _yes_no(link.unsubscribe),
            ", ".join(f"#{copy.ordinal + 1}" for copy in row.copies),
            row.copies_total,
            row.total,
            row.unique,
            row.rate,
            row.share,
            row.unique_share,
        )


def _compare_rows(scope: metrics.Scope, other: metrics.Scope, metric: str) -> Iterator[tuple]:
    found = metrics.compare(scope, other, metric)
    a, b = found.a, found.b
    yield (
        None,
        None,
        WHOLE_EMAIL,
        "",
        "",
        a.total_clicks,
        a.clickers,
        a.ctr,
        b.total_clicks,
        b.clickers,
        b.ctr,
        found.ctr_difference,
        _p_value(found.test),
        _significant(found.test),
    )
    for pair in found.links:
        yield (
            pair.a.link.ordinal + 1 if pair.a else None,
            pair.b.link.ordinal + 1 if pair.b else None,
            pair.link.text,
            pair.link.href,
            pair.change,
            *(_side(pair.a) + _side(pair.b)),
            pair.difference,
            _p_value(pair.test),
            _significant(pair.test),
        )


def _side(row) -> tuple:
    return (row.total, row.unique, row.rate) if row is not None else (None, None, None)


class _PValue(float):
    """A p-value: written with 6 decimals (percentages get 4), small ones matter."""


def _p_value(test) -> float | None:
    return _PValue(round(test.p_value, 6)) if test is not None else None


def _significant(test) -> str:
    return "" if test is None else _yes_no(test.significant)


def _version_names(links) -> dict[int, str]:
    return {
        v.pk: str(v)
        for v in TemplateVersion.objects.filter(
            pk__in={link.version_id for link in links}
        ).select_related("template")
    }


def csv_chunks(scope: metrics.Scope, metric: str = "rate", compare=None) -> Iterator[bytes]:
    """The CSV file as UTF-8 chunks of about 16 KB, produced as the rows are.

    A generator: nothing is queried before the first pull, and the workspace's scope must
    be active at every pull (csv_streaming_response sees to that).
    """
    header, rows = export_rows(scope, metric, compare)
    yield from _csv_stream(header, rows)


def write_csv(scope: metrics.Scope, file, metric: str = "rate", compare=None) -> None:
    """Write the CSV export to `file`, a binary file object (see csv_chunks)."""
    for chunk in csv_chunks(scope, metric, compare):
        file.write(chunk)


def csv_streaming_response(
    scope: metrics.Scope, filename: str, metric: str = "rate", compare=None
) -> StreamingHttpResponse:
    """The CSV export as a download, streamed while the rows are produced.

    The body is generated after the view has returned, when its workspace scope has
    closed, so every pull re-enters the scope of `scope.workspace`.
    """
    _check_metric(metric)
    response = StreamingHttpResponse(
        _scoped(scope.workspace, csv_chunks(scope, metric, compare)),
        content_type=CSV_CONTENT_TYPE,
    )
    response.headers["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def write_xlsx(scope: metrics.Scope, file, metric: str = "rate", compare=None) -> None:
    """Write the Excel export to `file` (a path, or a seekable binary file object).

    Sheet "Links" (or "Compare"): the export_rows table, percentages as Excel percents;
    sheet "Summary": what the scope selects and the email totals (each variant's, when
    comparing). Rows go to disk as they are written (constant_memory), so the size of
    the email does not matter. Runs its queries at once: the workspace's scope must be
    active.
    """
    header, rows = export_rows(scope, metric, compare)
    percent_columns = {i for i, title in enumerate(header) if title in PERCENT_HEADERS}
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

    sheet = workbook.add_worksheet("Compare" if compare is not None else "Links")
    for column, width in enumerate(COMPARE_WIDTHS if compare is not None else COLUMN_WIDTHS):
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
            elif column in percent_columns:
                sheet.write_number(last, column, value / 100, percent)
            else:
                sheet.write_number(last, column, value)
    sheet.autofilter(0, 0, last, len(header) - 1)

    summary = workbook.add_worksheet("Summary")
    summary.set_column(0, 0, 22)
    summary.set_column(1, 1, 40)
    line = 0
    sections = [("Scope", describe_scope(scope, metric))]
    if compare is not None:
        compared = Variant.objects.filter(pk=compare.variant_id).first()
        sections.append(("Compared with variant", [("Variant", str(compared.name))]))
        sections.append(("Email totals (A)", _totals_lines(metrics.email_totals(scope))))
        sections.append(("Email totals (B)", _totals_lines(metrics.email_totals(compare))))
    else:
        sections.append(("Email totals", _totals_lines(metrics.email_totals(scope))))
    for title, lines in sections:
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


def xlsx_response(
    scope: metrics.Scope, filename: str, metric: str = "rate", compare=None
) -> FileResponse:
    """The Excel export as a download: written to a temporary file now (inside the view's
    scope), then sent from disk; the file vanishes when the response is closed."""
    _check_metric(metric)
    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    try:
        write_xlsx(scope, tmp, metric, compare)
        tmp.seek(0)
    except BaseException:
        tmp.close()
        raise
    return FileResponse(tmp, as_attachment=True, filename=filename, content_type=XLSX_CONTENT_TYPE)


def copy_xlsx(scope: metrics.Scope, stream, metric: str = "rate", compare=None) -> None:
    """Write the Excel export to a stream that may not seek (a pipe).

    A zip written to an unseekable stream gets different bytes (data descriptors), so
    it is written to a temporary file first: the bytes equal write_xlsx's to a file.
    """
    with tempfile.TemporaryFile() as tmp:
        write_xlsx(scope, tmp, metric, compare)
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
        return formula_safe(value)
    if isinstance(value, _PValue):
        return f"{value:.6f}"
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
