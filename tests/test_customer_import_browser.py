"""The import in Chromium, as a marketer does it: upload a CSV with three bad rows, check
the guessed mapping and the preview, confirm a type, import, read the summary and
download the rows that were not imported (tasks inline, as the embedded default runs)."""

import csv

import pytest
from django_scopes import scopes_disabled

from campaigns.models import Customer
from tests.conftest import PASSWORD

CSV = (
    "email,first name,orders,signed up\r\n"
    "ann@example.com,Ann,3,2024-01-05\r\n"
    "bob@example.com,Bob,many,2024-02-01\r\n"
    "carl@example.com,Carl,1,2024-02-30\r\n"
    "dora@example.com,Dora,0,2024-03-01\r\n"
    "no-address,Eve,2,2024-03-02\r\n"
)


@pytest.mark.browser
def test_a_marketer_imports_a_csv_and_sees_the_bad_rows_reported(
    transactional_db,
    live_server,
    browser,
    eager_tasks,
    make_user,
    make_workspace,
    tmp_path,
    settings,
):
    settings.CUSTOMER_IMPORT_DIR = tmp_path / "imports"
    user = make_user("marketer")
    workspace = make_workspace("Fernhill", owner=user)
    source = tmp_path / "customers.csv"
    source.write_text(CSV, encoding="utf-8")
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "marketer")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/w/**")
        page.click("nav.mainnav >> text=Customers")
        assert "No customers yet" in page.content()
        page.click("text=Import customers")
        page.set_input_files("#id_file", str(source))
        page.click("button[type=submit] >> text=Upload and map columns")
        page.wait_for_selector("#mapping")
        # Guessed: the email column is the key; "many" and 2024-02-30 make text columns.
        assert page.input_value("select[name=field_0]") == "email"
        assert page.input_value("input[name=name_1]") == "first_name"
        assert page.input_value("select[name=type_2]") == "text"
        assert page.locator("#preview tbody tr").count() == 5
        assert page.locator("#preview tbody tr").nth(4).inner_text().startswith("no-address")
        page.select_option("select[name=type_2]", "number")
        page.select_option("select[name=type_3]", "date")
        page.click("#mapping-form button[type=submit]")
        page.wait_for_selector("text=Import finished")
        summary = {
            name: page.inner_text(f"#import-{name}")
            for name in ("created", "updated", "skipped", "failed")
        }
        assert summary == {"created": "2", "updated": "0", "skipped": "0", "failed": "3"}
        # The bad rows are on the page too, with their line numbers and reasons.
        assert page.locator("#import-errors td.line").all_inner_texts() == ["3", "4", "6"]
        assert page.locator("#import-errors td.reason").nth(0).inner_text() == (
            "orders: “many” is not a number"
        )
        with page.expect_download() as download:
            page.click("text=Download the rows not imported (CSV)")
        with open(download.value.path(), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        assert [(r[0], r[1]) for r in rows[1:]] == [
            ("3", "orders: “many” is not a number"),
            ("4", "signed_up: “2024-02-30” is not a date (YYYY-MM-DD)"),
            ("6", "“no-address” is not an email address"),
        ]
        page.click("text=Back to customers")
        assert page.locator("#customer-table tbody tr").count() == 2
        with page.expect_response(lambda r: "q=dora" in r.url):
            page.fill("#id_q", "dora")
        page.wait_for_url(lambda url: "q=dora" in url)
        assert page.locator("#customer-table tbody tr").count() == 1
    finally:
        context.close()
    with scopes_disabled():
        stored = {c.email: c.attributes for c in Customer.objects.filter(workspace=workspace)}
    assert stored == {
        "ann@example.com": {"first_name": "Ann", "orders": 3, "signed_up": "2024-01-05"},
        "dora@example.com": {"first_name": "Dora", "orders": 0, "signed_up": "2024-03-01"},
    }
