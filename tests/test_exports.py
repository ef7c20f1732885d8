"""Click-map exports: CSV and Excel hold exactly the numbers of clickmap.metrics, ranked
by the chosen metric; the command, the streamed download and the writers give the same
bytes; text never becomes a formula; big exports stream."""

import csv
import io
import uuid
from datetime import timedelta

import openpyxl
import pytest
from django.core.management import CommandError, call_command
from django.http import FileResponse, StreamingHttpResponse
from django_scopes import ScopeError, scopes_disabled
from django_scopes import scope as tenant_scope

from campaigns.models import Campaign, Delivery, TemplateLink, Variant
from clickmap import exports, metrics
from clickmap.rollups import aggregate
from tests.clickmap_truth import recount
from tests.factories import customers, sendable_campaign
from tests.rollup_world import T0, links_of
from tracking.models import ClickEvent, EventChange

COL = {name: i for i, name in enumerate(exports.HEADER)}  # column index by header
TEXT, HREF, KIND = COL["Text"], COL["Destination"], COL["Kind"]
TOTAL, UNIQUE, RATE = COL["Total clicks"], COL["Unique clicks"], COL["Click rate %"]


def click(workspace, delivery, link, times=1, reliable=True, minutes=0):
    for n in range(times):
        ClickEvent.objects.create(
            event_id=uuid.uuid4(),
            workspace=workspace,
            delivery=delivery,
            link=link,
            url=link.href,
            at=T0 + timedelta(minutes=minutes + n),
            reliable=reliable,
            device="desktop",
        )
    EventChange.objects.create(kind="c", delivery=delivery, link=link)


@pytest.fixture
def clicked(world):
    """The rollup world with clicks that rank differently by total and by unique."""
    with scopes_disabled():
        d = world.deliveries  # [c0 node 1, c0 node 2, c1 node 1, c1 node 2, …]
        one, two, three = links_of(d[0])  # variant A (HTML_A)
        _, nine = links_of(d[2])  # variant B (HTML_B)
        [amp] = links_of(d[1])
        ws = world.workspace
        click(ws, d[0], one, times=5)  # one customer, five clicks
        for delivery in (d[0], d[4], d[8]):  # three customers, once each
            click(ws, delivery, two, minutes=30)
        click(ws, d[4], three, reliable=False)  # a scanner
        click(ws, d[2], nine, times=2)
        click(ws, d[6], nine, minutes=90)
        click(ws, d[1], amp, minutes=24 * 60)
        aggregate()
    return world


def campaign_scope(world, **fields):
    return metrics.Scope(workspace=world.workspace, campaign_id=world.campaign.pk, **fields)


def default_scope(world):
    """The click map's default selection of the world's campaign."""
    return campaign_scope(
        world, node_id=world.nodes[0].pk, variant_id=world.variants[0].pk, format="html"
    )


def csv_bytes(scope, metric="rate"):
    out = io.BytesIO()
    with tenant_scope(workspace=scope.workspace):
        exports.write_csv(scope, out, metric)
    return out.getvalue()


def xlsx_bytes(scope, metric="rate"):
    out = io.BytesIO()
    with tenant_scope(workspace=scope.workspace):
        exports.write_xlsx(scope, out, metric)
    return out.getvalue()


def parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def expected_rows(world, metric):
    """The export table of the whole campaign, recounted from the raw clicks."""
    with scopes_disabled():
        truth = recount([v.pk for v in world.variants], fmt=None)
        links = {link.pk: link for link in TemplateLink.objects.filter(pk__in=truth.rows)}
        copies = {
            twin: [c for c in TemplateLink.objects.filter(twin_id=twin, mso=True)]
            for twin in truth.rows
        }
        names = {link.pk: str(link.version) for link in links.values()}
    ranked = sorted(
        truth.rows.values(),
        key=lambda r: (
            -getattr(r, metric),
            links[r.link].version_id,
            links[r.link].format,
            links[r.link].ordinal,
        ),
    )
    return [
        [
            str(rank),
            str(links[r.link].ordinal + 1),
            names[r.link],
            links[r.link].format,
            links[r.link].text,
            links[r.link].href,
            links[r.link].xpath,
            links[r.link].kind,
            "yes" if links[r.link].unsubscribe else "no",
            ", ".join(f"#{c.ordinal + 1}" for c in copies[r.link]),
            "0",
            str(r.total),
            str(r.unique),
            f"{r.rate:.4f}",
            f"{r.share:.4f}",
            f"{r.unique_share:.4f}",
        ]
        for rank, r in enumerate(ranked, 1)
    ]


@pytest.mark.parametrize("metric", ["rate", "unique", "total", "share"])
def test_csv_rows_are_link_metrics_ranked_by_the_metric(clicked, metric):
    scope = campaign_scope(clicked)
    header, *rows = parse_csv(csv_bytes(scope, metric))
    assert header == list(exports.HEADER)
    assert rows == expected_rows(clicked, metric)
    assert len(rows) == 6  # A's three links, B's two, the AMP part's one
    column = {"total": TOTAL, "unique": UNIQUE, "rate": RATE, "share": COL["Click share %"]}[metric]
    values = [float(row[column]) for row in rows]
    assert values == sorted(values, reverse=True)
    for a, b in zip(rows, rows[1:], strict=False):  # ties keep inventory order
        if a[column] == b[column]:
            assert int(a[1]) <= int(b[1])


def test_ranking_by_total_and_by_unique_differs_as_the_clicks_say(clicked):
    scope = campaign_scope(clicked)
    by_total = parse_csv(csv_bytes(scope, "total"))[1]
    by_unique = parse_csv(csv_bytes(scope, "unique"))[1]
    assert (by_total[TEXT], by_total[TOTAL], by_total[UNIQUE]) == ("One", "5", "1")
    assert (by_unique[TEXT], by_unique[TOTAL], by_unique[UNIQUE]) == ("Two", "3", "3")
    # Rate: 3 of the 6 customers delivered to clicked "Two" (bounced c5 is not delivered).
    assert by_unique[RATE] == "50.0000"


def test_reliable_only_drops_the_scanner_click(clicked):
    rows = parse_csv(csv_bytes(campaign_scope(clicked, reliable_only=True), "total"))[1:]
    assert [r[TOTAL] for r in rows if r[TEXT] == "Three"] == ["0"]
    rows = parse_csv(csv_bytes(campaign_scope(clicked), "total"))[1:]
    assert [r[TOTAL] for r in rows if r[TEXT] == "Three"] == ["1"]


def test_csv_is_utf8_without_bom_with_crlf_rows(clicked):
    data = csv_bytes(campaign_scope(clicked))
    assert data.startswith(b"Rank,Link #,Template version,")
    assert data.count(b"\r\n") == 7 and data.endswith(b"\r\n")


def test_xlsx_holds_the_same_table_as_numbers_and_a_summary(clicked):
    scope = campaign_scope(clicked)
    book = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(scope, "unique")))
    assert book.sheetnames == ["Links", "Summary"]
    sheet = book["Links"]
    header, *rows = list(sheet.iter_rows(values_only=True))
    assert header == exports.HEADER
    expected = expected_rows(clicked, "unique")
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert [str(v) if v is not None else "" for v in row[1:9]] == want[1:9]
        assert row[TOTAL : UNIQUE + 1] == (int(want[TOTAL]), int(want[UNIQUE]))
        assert [100 * v for v in row[RATE:]] == pytest.approx(
            [float(v) for v in want[RATE:]], abs=1e-9
        )
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    assert sheet.cell(row=2, column=RATE + 1).number_format == "0.00%"

    summary = {
        label: value
        for label, value in book["Summary"].iter_rows(values_only=True)
        if label is not None
    }
    with tenant_scope(workspace=scope.workspace):
        totals = metrics.email_totals(scope)
    assert summary["Campaign"] == "Scenario"
    assert summary["Email node"] == "all nodes"
    assert summary["Ranked by"] == "Unique clicks"
    assert (summary["Sent"], summary["Delivered"], summary["Clickers"]) == (
        totals.sent,
        totals.delivered,
        totals.clickers,
    )
    assert 100 * summary["CTR"] == pytest.approx(totals.ctr, abs=1e-9)
    assert summary["Total clicks"] == totals.total_clicks == 13


def test_xlsx_summary_states_a_narrow_scope(clicked):
    scope = campaign_scope(
        clicked,
        node_id=clicked.nodes[0].pk,
        variant_id=clicked.variants[1].pk,
        format="html",
        date_from=T0.date(),
        date_to=T0.date(),
        reliable_only=True,
        segment=clicked.segment,
        device="mobile",
    )
    book = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(scope)))
    summary = dict(row for row in book["Summary"].iter_rows(values_only=True) if row[0])
    assert summary["Email node"] == "Day 1"
    assert summary["Variant"] == "B"
    assert summary["Format"] == "HTML"
    assert summary["Period"] == "2026-11-01 – 2026-11-01 (UTC days)"
    assert summary["Reliable clicks only"] == "yes"
    assert summary["Segment"] == "Tier 1"
    assert summary["Device"] == "Mobile"


FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+1", "-2", "@SUM(A1)"]


@pytest.fixture
def formula_campaign(make_workspace):
    workspace = make_workspace()
    texts = [*FORMULAS, 'Say "hi", then go — café']
    html = "".join(f'<a href="https://x.example/{i}">{t}</a>' for i, t in enumerate(texts))
    return sendable_campaign(workspace, html)


def test_csv_neutralises_text_a_spreadsheet_would_run_as_a_formula(formula_campaign):
    scope = metrics.Scope(workspace=formula_campaign.workspace, campaign_id=formula_campaign.pk)
    rows = parse_csv(csv_bytes(scope))[1:]
    texts = [row[TEXT] for row in sorted(rows, key=lambda r: int(r[1]))]
    assert texts == [*("'" + f for f in FORMULAS), 'Say "hi", then go — café']


@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r"])
def test_every_cell_from_tenant_data_is_neutralised(make_workspace, trigger):
    """Template names, link texts and destinations (link and compare tables) and who
    clicked (email, customer id) all come from tenants or their customers."""
    workspace = make_workspace()
    html = f'<a href="{trigger}1+2">{trigger}text</a>'
    campaign = sendable_campaign(
        workspace,
        html,
        name=f"{trigger}name",
        variants=[("A", 1, html, "html"), ("B", 1, html, "html")],
    )
    scope = metrics.Scope(workspace=workspace, campaign_id=campaign.pk)
    with scopes_disabled():
        a, b = Variant.objects.filter(node__campaign=campaign).order_by("name")
    compare = metrics.Scope(workspace=workspace, campaign_id=campaign.pk, variant_id=b.pk)
    base = metrics.Scope(workspace=workspace, campaign_id=campaign.pk, variant_id=a.pk)
    out = io.BytesIO()
    with tenant_scope(workspace=workspace):
        exports.write_csv(base, out, "rate", compare)
    cells = [
        cell for row in parse_csv(csv_bytes(scope)) + parse_csv(out.getvalue()) for cell in row
    ]
    assert [c for c in cells if c.startswith(trigger)] == []
    assert f"'{trigger}name A v1" in cells
    if trigger not in ("\t", "\r"):  # (link texts are whitespace-trimmed when inventoried)
        assert f"'{trigger}text" in cells and f"'{trigger}1+2" in cells
    with scopes_disabled():
        [person] = customers(workspace, [(f"{trigger}id", "someone@example.test", {})])
        delivery = Delivery.objects.create(
            workspace=workspace,
            node=a.node,
            variant=a,
            customer=person,
            template_version=a.template_version,
            status="sent",
            sent_at=T0,
        )
        link = a.template_version.links.get()
        click(workspace, delivery, link)
        with tenant_scope(workspace=workspace):
            response = exports.clickers_csv_response(
                metrics.link_clickers(base, [link.pk]), "c.csv", workspace
            )
    clickers = parse_csv(b"".join(response.streaming_content))
    assert clickers[1][1] == f"'{trigger}id"


def test_xlsx_writes_formula_like_text_as_text(formula_campaign):
    scope = metrics.Scope(workspace=formula_campaign.workspace, campaign_id=formula_campaign.pk)
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(scope)))["Links"]
    cells = sorted((row for row in sheet.iter_rows(min_row=2)), key=lambda r: r[1].value)
    assert [row[TEXT].value for row in cells] == [*FORMULAS, 'Say "hi", then go — café']
    assert {row[TEXT].data_type for row in cells} == {"s"}


def test_an_outlook_copy_is_counted_on_the_link_it_is_shown_on(make_workspace):
    html = (
        '<p><a href="https://x.example/top">Top</a></p>'
        '<!--[if mso]><v:roundrect href="https://x.example/cta">Buy now</v:roundrect>'
        '<![endif]--><a href="https://x.example/cta">Buy now</a>'
    )
    campaign = sendable_campaign(make_workspace(), html)
    workspace = campaign.workspace
    with scopes_disabled():
        [customer] = customers(workspace, [("x1", "x1@example.test", {})])
        variant = Variant.objects.get(node__campaign=campaign)
        delivery = Delivery.objects.create(
            workspace=workspace,
            node=variant.node,
            variant=variant,
            customer=customer,
            template_version=variant.template_version,
            status="sent",
            sent_at=T0,
        )
        links = {(link.kind, link.href): link for link in variant.template_version.links.all()}
        vml, twin = links["vml", "https://x.example/cta"], links["a", "https://x.example/cta"]
        click(workspace, delivery, vml, times=2)
        click(workspace, delivery, twin, minutes=5)
        aggregate()
    rows = parse_csv(csv_bytes(metrics.Scope(workspace=workspace, campaign_id=campaign.pk)))[1:]
    assert [row[KIND] for row in rows] == ["a", "a"]  # the copy is no row of its own
    [cta] = [row for row in rows if row[HREF] == "https://x.example/cta"]
    assert cta[COL["Outlook-only copies"]] == f"#{vml.ordinal + 1}"
    assert (cta[COL["Outlook-only clicks"]], cta[TOTAL], cta[UNIQUE]) == ("2", "3", "2")


def test_command_writes_the_dashboard_default_export(clicked, tmp_path):
    out = tmp_path / "map.csv"
    call_command("export_clickmap", str(clicked.campaign.pk), "--format", "csv", "--out", out)
    # The page's default: first email node, its first variant (A and B send different
    # templates, so they are not summed), HTML, ranked by click rate.
    assert out.read_bytes() == csv_bytes(default_scope(clicked))
    assert len(parse_csv(out.read_bytes())) == 1 + 3


def test_command_options_select_like_the_dashboard(clicked, tmp_path):
    out = tmp_path / "map.csv"
    day = T0.date() + timedelta(days=1)
    call_command(
        "export_clickmap",
        str(clicked.campaign.pk),
        "--format=csv",
        f"--out={out}",
        "--metric=total",
        "--reliable-only",
        f"--node={clicked.nodes[1].pk}",
        "--amp",
        f"--from={day}",
        f"--to={day}",
    )
    scope = campaign_scope(
        clicked,
        node_id=clicked.nodes[1].pk,
        format="amp",
        reliable_only=True,
        date_from=day,
        date_to=day,
    )
    assert out.read_bytes() == csv_bytes(scope, "total")
    assert parse_csv(out.read_bytes())[1][TOTAL] == "1"  # the AMP click of the next day


def test_command_writes_the_same_xlsx_bytes_as_the_writer(clicked, tmp_path):
    out = tmp_path / "map.xlsx"
    args = (str(clicked.campaign.pk), "--format", "xlsx", "--out", out, "--metric", "share")
    call_command("export_clickmap", *args)
    assert out.read_bytes() == xlsx_bytes(default_scope(clicked), "share")


def test_command_csv_to_stdout_is_the_same_text(clicked):
    stdout = io.StringIO()
    call_command("export_clickmap", str(clicked.campaign.pk), stdout=stdout)
    assert stdout.getvalue() == csv_bytes(default_scope(clicked)).decode()


def test_command_writes_binary_to_a_piped_stdout(clicked):
    scope = default_scope(clicked)
    for fmt, expected in (("csv", csv_bytes(scope)), ("xlsx", xlsx_bytes(scope))):
        pipe = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        call_command("export_clickmap", str(clicked.campaign.pk), "--format", fmt, stdout=pipe)
        assert pipe.buffer.getvalue() == expected


class Terminal(io.StringIO):
    buffer = io.BytesIO()

    def isatty(self):
        return True


def test_command_refuses_to_print_excel_to_a_terminal(clicked):
    with pytest.raises(CommandError, match="--out FILE"):
        call_command(
            "export_clickmap", str(clicked.campaign.pk), "--format", "xlsx", stdout=Terminal()
        )


def test_command_rejects_what_it_cannot_find(clicked, tmp_path):
    with scopes_disabled():
        missing = (Campaign.objects.order_by("-pk").values_list("pk", flat=True).first()) + 1
    out = tmp_path / "x.csv"
    with pytest.raises(CommandError, match=f"No campaign with id {missing}"):
        call_command("export_clickmap", str(missing), "--out", out)
    campaign = str(clicked.campaign.pk)
    with pytest.raises(CommandError, match="has no email node 0"):
        call_command("export_clickmap", campaign, "--node", "0", "--out", out)
    other_node_variant = str(clicked.variants[2].pk)
    with pytest.raises(CommandError, match="has no variant"):
        call_command("export_clickmap", campaign, "--variant", other_node_variant, "--out", out)
    with pytest.raises(CommandError, match="ends .* before it starts"):
        call_command("export_clickmap", campaign, "--from=2026-11-02", "--to=2026-11-01")
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_clickmap", campaign, "--from=yesterday")
    assert not out.exists()


def test_streamed_csv_is_the_write_csv_file_even_after_the_view_scope_closed(clicked):
    scope = campaign_scope(clicked)
    with tenant_scope(workspace=clicked.workspace):
        response = exports.csv_streaming_response(scope, "clickmap-1.csv", metric="total")
    with pytest.raises(ScopeError):  # no scope now, as after a view returned
        list(Delivery.objects.all())
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="clickmap-1.csv"'
    assert b"".join(response.streaming_content) == csv_bytes(scope, "total")
    with pytest.raises(ScopeError):  # and the stream left no scope behind
        list(Delivery.objects.all())


def test_excel_download_is_the_write_xlsx_file(clicked):
    scope = campaign_scope(clicked)
    with tenant_scope(workspace=clicked.workspace):
        response = exports.xlsx_response(scope, "clickmap-1.xlsx")
    assert isinstance(response, FileResponse)
    assert response["Content-Type"] == exports.XLSX_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="clickmap-1.xlsx"'
    body = b"".join(response.streaming_content)
    # Not response.close(): its request_finished signal would close the test's connection.
    response.file_to_stream.close()
    assert int(response["Content-Length"]) == len(body)
    assert body == xlsx_bytes(scope) == xlsx_bytes(scope)  # no timestamp: same bytes


def test_an_unknown_metric_is_refused(clicked):
    scope = campaign_scope(clicked)
    with pytest.raises(ValueError, match="Unknown metric"):
        exports.export_rows(scope, "ctr")
    with pytest.raises(ValueError, match="Unknown metric"):
        exports.csv_streaming_response(scope, "x.csv", metric="ctr")


def test_a_large_export_streams_rows_as_they_are_made(make_workspace, monkeypatch):
    size = 5000
    html = "".join(f'<a href="https://x.example/{i}">Link {i}</a>' for i in range(size))
    campaign = sendable_campaign(make_workspace(), html)
    scope = metrics.Scope(workspace=campaign.workspace, campaign_id=campaign.pk)
    pulls = 0
    real = exports.export_rows

    def counted(*args, **kwargs):
        header, rows = real(*args, **kwargs)

        def counting():
            nonlocal pulls
            for row in rows:
                pulls += 1
                yield row

        return header, counting()

    monkeypatch.setattr(exports, "export_rows", counted)
    with tenant_scope(workspace=campaign.workspace):
        response = exports.csv_streaming_response(scope, "big.csv")
    assert isinstance(response, StreamingHttpResponse)
    assert pulls == 0  # nothing is made before the body is asked for
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert first.startswith(b"Rank,Link #")
    assert 0 < pulls < size // 10  # the first chunk left before most rows were made
    rest = b"".join(chunks)
    assert pulls == size
    assert len(parse_csv(first + rest)) == 1 + size


def test_clickers_csv_lists_who_clicked_a_link(clicked):
    scope = campaign_scope(clicked, node_id=clicked.nodes[0].pk, format="html")
    with scopes_disabled():
        _, two, _ = links_of(clicked.deliveries[0])
    with tenant_scope(workspace=clicked.workspace):
        response = exports.clickers_csv_response(
            metrics.link_clickers(scope, [two.pk]), "clickers.csv", clicked.workspace
        )
    header, *rows = parse_csv(b"".join(response.streaming_content))
    assert header == list(exports.CLICKERS_HEADER)
    assert sorted(row[0] for row in rows) == [
        "c0@example.test",
        "c2@example.test",
        "c4@example.test",
    ]
    assert {(row[4], row[5]) for row in rows} == {("1", "1")}
    assert rows[0][2].endswith("+00:00")
