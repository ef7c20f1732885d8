"""The page, the CSV, the Excel file and `export_clickmap` agree row for row, for every
selector combination of the demo campaigns: each email, each variant alone, each pair of
variants compared, all time or a period, all clicks or reliable ones, everyone or a
segment, every device or mobile. (That the numbers are right is shown against raw-click
recounts in test_clickmap_page.py and test_compare.py; here: that they are one.)"""

import csv
import io
import itertools
from datetime import timedelta

import openpyxl
import pytest
from django.core.management import call_command
from django.urls import reverse
from django_scopes import scopes_disabled

from campaigns.models import Campaign, Segment
from tests.demo_world import compare_table, page_table, page_url
from tracking.models import ClickEvent


def download(client, url, query, fmt) -> bytes:
    response = client.get(url, {**query, "export": fmt})
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def command_csv(campaign, query) -> bytes:
    options = {
        "variant": "--variant",
        "compare": "--compare",
        "node": "--node",
        "from": "--from",
        "to": "--to",
        "segment": "--segment",
        "device": "--device",
    }
    args = [str(campaign.pk), "--format", "csv"]
    for key, flag in options.items():
        if key in query:
            args.append(f"{flag}={query[key]}")
    if "reliable" in query:
        args.append("--reliable-only")
    out = io.StringIO()
    call_command("export_clickmap", *args, stdout=out)
    return out.getvalue().encode()


def xlsx_rows(data: bytes) -> list[tuple]:
    book = openpyxl.load_workbook(io.BytesIO(data))
    sheet = book["Compare"] if "Compare" in book.sheetnames else book["Links"]
    return list(sheet.iter_rows(min_row=2, values_only=True))


def rounded(value, places):
    return None if value in (None, "") else round(float(value), places)


def selections(campaign, segment, period):
    """Every selector combination of one campaign, as page queries."""
    with scopes_disabled():
        nodes = list(campaign.nodes.order_by("position").prefetch_related("variants"))
    for node in nodes:
        variants = sorted(node.variants.all(), key=lambda v: v.name)
        shown = [(v, None) for v in variants]
        shown += [(v, w) for v, w in itertools.permutations(variants, 2)]
        if len({(v.template_version_id, v.format) for v in variants}) == 1 < len(variants):
            shown.append((None, None))  # "All variants": they share a version
        for (variant, other), dates, reliable, seg, device in itertools.product(
            shown, (None, period), (False, True), (None, segment), (None, "mobile")
        ):
            query = {"node": node.pk}
            if variant is not None:
                query["variant"] = variant.pk
            if other is not None:
                query["compare"] = other.pk
            if dates:
                query["from"], query["to"] = dates
            if reliable:
                query["reliable"] = "1"
            if seg is not None:
                query["segment"] = seg.pk
            if device:
                query["device"] = device
            yield query


@pytest.mark.parametrize(
    "name",
    [
        "Black Friday — 30% off everything",
        "Black Friday — last day (subject test)",
        "November newsletter",
        "Welcome series",
    ],
)
def test_page_csv_excel_and_command_agree_on_every_selection(demo, client, name):
    workspace = demo[0]
    with scopes_disabled():
        campaign = Campaign.objects.get(workspace=workspace, name=name)
        segment = Segment.objects.get(workspace=workspace, name="Germany")
        first = ClickEvent.objects.filter(delivery__node__campaign=campaign).order_by("at")[0]
    start = first.at.date()
    period = (start.isoformat(), (start + timedelta(days=1)).isoformat())
    export_url = reverse("clickmap:export", args=[workspace.slug, campaign.pk])
    checked = 0
    for query in selections(campaign, segment, period):
        html = client.get(page_url(workspace, campaign), query).content.decode()
        csv_data = download(client, export_url, query, "csv")
        assert command_csv(campaign, query) == csv_data, query
        header, *rows = list(csv.reader(io.StringIO(csv_data.decode())))
        excel = xlsx_rows(download(client, export_url, query, "xlsx"))
        assert len(excel) == len(rows), query
        if "compare" in query:
            shown = compare_table(html)
            assert len(shown) == len(rows), query
            for page_row, csv_row, xlsx_row in zip(shown, rows, excel, strict=True):
                _name, rate_a, rate_b, diff, p, significant = page_row
                a_rate, b_rate, difference, p_value, sig = (
                    csv_row[7],
                    csv_row[10],
                    csv_row[11],
                    csv_row[12],
                    csv_row[13],
                )
                for shown_value, exported in (
                    (rate_a, a_rate),
                    (rate_b, b_rate),
                    (diff, difference),
                ):
                    if shown_value is None or exported == "":
                        assert shown_value is None and exported == "", query
                    else:
                        assert shown_value == pytest.approx(float(exported), abs=0.0051), query
                if p is None:
                    assert p_value == "", query
                else:
                    assert p == pytest.approx(float(p_value), abs=0.000051), query
                assert (significant or "") == sig, query
                assert [rounded(v, 6) for v in (xlsx_row[11], xlsx_row[12])] == [
                    rounded(difference, 6),
                    rounded(p_value, 6),
                ], query
                for percent, column in ((xlsx_row[7], 7), (xlsx_row[10], 10)):
                    assert rounded(percent and 100 * percent, 4) == rounded(csv_row[column], 4)
        else:
            shown = list(page_table(html).values())  # ranked, as the default sort lists them
            assert len(shown) == len(rows), query
            for page_row, csv_row, xlsx_row in zip(shown, rows, excel, strict=True):
                rank, total, unique, rate, share = page_row
                assert (rank, total, unique) == (
                    int(csv_row[0]),
                    int(csv_row[11]),
                    int(csv_row[12]),
                ), query
                # (the page rounds half up, Python's round() half to even: a hair apart)
                assert rate == pytest.approx(float(csv_row[13]), abs=0.0051), query
                assert share == pytest.approx(float(csv_row[14]), abs=0.051), query
                assert tuple(xlsx_row[:2]) == (int(csv_row[0]), int(csv_row[1])), query
                assert (xlsx_row[11], xlsx_row[12]) == (total, unique), query
                assert round(100 * xlsx_row[13], 4) == float(csv_row[13]), query
        checked += 1
    assert checked >= 16
