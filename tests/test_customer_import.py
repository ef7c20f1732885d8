"""Customer import (campaigns/customer_import.py): every row of a file is imported exactly
or reported with its line and reason, whatever the encoding, delimiter and quoting; the
import_customers command's contract; a killed import run again gives each customer once.

Expected values come from the generated rows themselves (which values were made valid or
broken, and which row of each key comes last), never from the importer's own checks.
"""

import csv
import io
import os
import signal
import subprocess
import sys
import tempfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from django.db import connection
from django_scopes import scope, scopes_disabled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import customer_import
from campaigns.customer_import import (
    Column,
    ImportFileError,
    first_errors,
    guess_type,
    import_customers,
    inspect_file,
)
from campaigns.models import Customer
from tests.conftest import database_url

ROOT = Path(__file__).resolve().parents[1]
HEADER = ["Email", "Name", "Age", "Joined", "VIP"]
MAPPING = [
    Column("email"),
    Column("attribute", "name", "text"),
    Column("attribute", "age", "number"),
    Column("attribute", "joined", "date"),
    Column("attribute", "vip", "boolean"),
]
# Letters that Windows-1252 and UTF-8 both hold and that make a Windows-1252 file invalid
# UTF-8 (no byte of them is a UTF-8 continuation byte), so the file's encoding is
# recognisable; plus the characters that need quoting.
TEXT = st.text(alphabet="abcXYZ éüßÅ,;\"'\n-=+@", min_size=0, max_size=12).filter(
    lambda s: "\r" not in s
)
EMAILS = [f"person{i}@example.com" for i in range(6)]


@st.composite
def cell(draw, valid, invalid):
    """(text written, expected value or None when the cell is empty, valid?)."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "empty", "invalid"]))
    if kind == "empty":
        return draw(st.sampled_from(["", "  "])), None, True
    if kind == "invalid":
        return draw(st.sampled_from(invalid)), None, False
    text, value = draw(valid)
    pad = draw(st.sampled_from(["", " ", "  "]))
    return f"{pad}{text}{pad}", value, True


NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(lambda n: (str(n), Decimal(n))),
    st.tuples(st.integers(-9999, 9999), st.integers(0, 99)).map(
        lambda t: (f"{t[0]}.{t[1]:02d}", Decimal(f"{t[0]}.{t[1]:02d}"))
    ),
    st.integers(0, 9).map(lambda n: (f"{n}e3", Decimal(n * 1000))),
)
DATES = st.dates(date(1900, 1, 1), date(2100, 12, 31)).map(lambda d: (d.isoformat(), d))
# Every yes/no word the README lists (true/false, yes/no, y/n, 1/0, on/off, t/f), written
# here rather than imported, in any case.
BOOLEANS = st.tuples(
    st.sampled_from(
        [("true", True), ("yes", True), ("y", True), ("1", True), ("on", True), ("t", True)]
        + [("false", False), ("no", False), ("n", False), ("0", False), ("off", False)]
        + [("f", False)]
    ),
    st.sampled_from([str.lower, str.upper, str.title]),
).map(lambda pair: (pair[1](pair[0][0]), pair[0][1]))


@st.composite
def customer_rows(draw):
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["ok"] * 6 + ["empty", "bad"]))
        if kind == "ok":
            address = draw(st.sampled_from(EMAILS))
            shown = draw(st.sampled_from([address, address.upper(), f" {address} "]))
            email = (shown, address, True)
        elif kind == "empty":
            email = ("", None, False)
        else:
            bad = ["not-an-email", "a@b", "x y@z.com", "a@b@c.com", "@example.com", "ann@example"]
            email = (draw(st.sampled_from(bad)), None, False)
        name = draw(TEXT)
        rows.append(
            {
                # A cell too many (a stray delimiter): the row is bad as read.
                "extra": ("x", None, False) if draw(st.integers(0, 9)) == 0 else ("", None, True),
                "email": email,
                "name": (name, name.strip() or None, True),
                "age": draw(cell(NUMBERS, ["abc", "1.2.3", "12a", "NaN", "1,5"])),
                "joined": draw(cell(DATES, ["2024-02-30", "31/12/2024", "soon"])),
                "vip": draw(cell(BOOLEANS, ["maybe", "ja", "2", "yess", "nope"])),
            }
        )
    return rows


def write_csv(rows, encoding, delimiter, quoting, terminator) -> tuple[bytes, list[int]]:
    """The file's bytes and each data row's first line number."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    writer.writerow(HEADER)
    lines = []
    for row in rows:
        lines.append(out.getvalue().count("\n") + 1)
        cells = [row[k][0] for k in ("email", "name", "age", "joined", "vip")]
        writer.writerow(cells + ["x"] if row["extra"][0] else cells)
    return out.getvalue().encode(encoding), lines


def expected_outcome(rows, lines):
    """(final customers by email, failed lines, skipped lines) in plain Python."""
    good, failed = {}, set()
    for row, line in zip(rows, lines, strict=True):
        if not any(row[k][0].strip() for k in row):
            continue  # a row of empty cells is a blank line, not a customer
        if all(row[k][2] for k in row):
            good.setdefault(row["email"][1], []).append((line, row))
        else:
            failed.add(line)
    customers, skipped = {}, set()
    for address, found in good.items():
        *earlier, (_, last) = found
        skipped |= {line for line, _ in earlier}
        customers[address] = {
            k: last[k][1] for k in ("name", "age", "joined", "vip") if last[k][1] is not None
        }
    return customers, failed, skipped


def stored_as_expected(stored: dict, expected: dict) -> bool:
    if set(stored) != set(expected):
        return False
    for key, value in expected.items():
        if isinstance(value, Decimal):
            if isinstance(stored[key], bool) or float(stored[key]) != float(value):
                return False
        elif isinstance(value, date):
            if stored[key] != value.isoformat():
                return False
        elif stored[key] != value:
            return False
    return True


def read_report(path) -> dict[int, str]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        assert next(reader)[:2] == ["line", "reason"]
        return {int(row[0]): row[1] for row in reader}


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=customer_rows(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
    delimiter=st.sampled_from([",", ";"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_every_row_is_imported_exactly_or_reported(
    make_workspace, rows, encoding, delimiter, quoting, terminator
):
    workspace = make_workspace()
    data, lines = write_csv(rows, encoding, delimiter, quoting, terminator)
    customers, failed, skipped = expected_outcome(rows, lines)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "customers.csv")
        Path(path).write_bytes(data)
        with scope(workspace=workspace):
            summary = import_customers(
                workspace, path, key="email", columns=MAPPING, errors_path=f"{path}.errors.csv"
            )
            stored = {c.email: c.attributes for c in Customer.objects.all()}
        report = read_report(f"{path}.errors.csv")
    assert (summary.created, summary.updated) == (len(customers), 0)
    assert (summary.failed, summary.skipped) == (len(failed), len(skipped))
    assert set(stored) == set(customers)
    for address, attributes in customers.items():
        assert stored_as_expected(stored[address], attributes), (stored[address], attributes)
    assert set(report) == failed | skipped
    assert all(report[line] for line in report)


def test_types_are_guessed_from_values():
    assert guess_type(["12", "-3.5", " 1e3 ", ""]) == "number"
    assert guess_type(["2024-01-31", "1999-12-01"]) == "date"
    assert guess_type(["2024-02-30"]) == "text"
    assert guess_type(["yes", "No", "TRUE"]) == "boolean"
    assert guess_type(["0", "1", "1"]) == "number"  # 0/1 alone is a count, not yes/no
    assert guess_type(["12", "twelve"]) == "text"
    assert guess_type(["", " "]) == "text"


@pytest.fixture
def workspace(make_workspace):
    return make_workspace("Import shop")


def _import(workspace, path, **options):
    with scope(workspace=workspace):
        return import_customers(workspace, str(path), errors_path=f"{path}.errors.csv", **options)


def test_import_by_external_id_merges_attributes_and_counts_updates(workspace, tmp_path):
    with scopes_disabled():
        Customer.objects.create(
            workspace=workspace, external_id="c-1", email="old@example.com", attributes={"a": 1}
        )
    path = tmp_path / "people.csv"
    path.write_text(
        "external_id;email;tier;score\n"
        "c-1;New@Example.com;gold;7\n"  # updates c-1: email and two attributes
        "c-2;;silver;\n"  # creates c-2 without an email
        ";x@example.com;gold;1\n"  # no key: fails
        "c-3;y@example.com;gold;seven\n",  # bad number: fails
        encoding="utf-8",
    )
    columns = [
        Column("external_id"),
        Column("email"),
        Column("attribute", "tier"),
        Column("attribute", "score", "number"),
    ]
    summary = _import(workspace, path, key="external_id", columns=columns)
    assert (summary.created, summary.updated, summary.skipped, summary.failed) == (1, 1, 0, 2)
    with scopes_disabled():
        c1 = Customer.objects.get(external_id="c-1")
        c2 = Customer.objects.get(external_id="c-2")
    assert (c1.email, c1.attributes) == ("new@example.com", {"a": 1, "tier": "gold", "score": 7})
    assert (c2.email, c2.attributes) == ("", {"tier": "silver"})
    assert read_report(f"{path}.errors.csv") == {
        4: "no external id",
        5: "score: “seven” is not a number",
    }
    again = _import(workspace, path, key="external_id", columns=columns)
    assert (again.created, again.updated, again.skipped, again.failed) == (0, 0, 2, 2)


PLAIN_LINES = [
    "email\tname\tage",
    "a@example.com\tAnn\t30",
    "\xa0\t \t\u3000",  # spaces only (as str.isspace): a blank line, not a row
    "b@example.com\tBob\tx",
    "A@example.com\t Ann B \t31",
]


@pytest.mark.parametrize(
    "variant, read_by_python",
    [
        ("plain", False),  # PostgreSQL's COPY parses it
        ("quoted", True),  # a quote: Python's csv reads it
        ("short row", True),  # COPY refuses a row of the wrong width: Python reports it
    ],
)
def test_a_plain_file_is_read_by_copy_with_the_same_outcome(
    workspace, tmp_path, monkeypatch, variant, read_by_python
):
    lines = list(PLAIN_LINES)
    expected_report = {
        2: "the same key is on line 5, which is imported instead",
        4: "age: “x” is not a number",
    }
    if variant == "quoted":
        lines[1] = 'a@example.com\t"Ann"\t30'
    if variant == "short row":
        lines.append("d@example.com\tDee")
        expected_report[6] = "the row has 2 cells, the header 3"
    path = tmp_path / "plain.tsv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    python_reads = []
    stage = customer_import._stage
    monkeypatch.setattr(customer_import, "_stage", lambda *a: python_reads.append(1) or stage(*a))
    columns = [Column("email"), Column("attribute", "name"), Column("attribute", "age", "number")]
    summary = _import(workspace, path, columns=columns)
    assert bool(python_reads) is read_by_python
    assert summary.rows == len(lines) - 2  # neither the header nor the blank line
    failed = len(expected_report) - 1
    assert (summary.created, summary.updated, summary.skipped, summary.failed) == (1, 0, 1, failed)
    assert read_report(f"{path}.errors.csv") == expected_report
    with scopes_disabled():
        customer = Customer.objects.get(workspace=workspace)
    assert (customer.email, customer.attributes) == ("a@example.com", {"name": "Ann B", "age": 31})


@pytest.mark.django_db(transaction=True)
def test_progress_of_a_plain_file_is_reported_between_committed_copies(workspace, tmp_path):
    # A plain file of ~3.3 MB: two COPY statements of PLAIN_CHUNK (2 MB) bytes at most.
    path = tmp_path / "many.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("email,external_id,n\n")
        for i in range(100_000):
            f.write(f"c{i}@example.com,ext-{i},{i}\n")
    reports = []

    def progress(percent, rows):
        # Outside any transaction: the page polling the import's row sees it.
        reports.append((percent, rows, connection.in_atomic_block))

    with scope(workspace=workspace):
        summary = import_customers(workspace, str(path), progress=progress)
    assert (summary.rows, summary.created) == (100_000, 100_000)
    copying = [r for r in reports if r[0] < 90]
    assert copying, reports
    assert all(not in_transaction for _, _, in_transaction in reports)
    assert all(0 < rows < 100_000 for _, rows, _ in copying)


def test_the_page_shows_the_first_bad_rows_and_counts_them_all(workspace, tmp_path):
    """The import's page lists the first bad rows (line and reason); the count says how
    many the downloadable report holds."""
    path = tmp_path / "many-bad.csv"
    lines = ["email,orders"] + [
        f"p{i}@example.test,{'x' if i % 2 else i}" for i in range(50)
    ]  # odd rows are bad: lines 3, 5, … 51
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    columns = [Column("email"), Column("attribute", "orders", "number")]
    summary = _import(workspace, path, key="email", columns=columns)
    assert (summary.created, summary.failed) == (25, 25)
    shown, count = first_errors(f"{path}.errors.csv", limit=20)
    assert count == 25
    assert [line for line, _ in shown] == list(range(3, 3 + 2 * 20, 2))
    assert all(reason == "orders: “x” is not a number" for _, reason in shown)
    assert first_errors(str(tmp_path / "none.csv")) == ([], 0)


def test_import_by_email_keeps_external_ids_and_refuses_a_taken_one(workspace, tmp_path):
    with scopes_disabled():
        Customer.objects.create(workspace=workspace, external_id="ann", email="ANN@example.com")
        Customer.objects.create(workspace=workspace, external_id="taken", email="t@example.com")
    path = tmp_path / "people.csv"
    path.write_text(
        "email,external id,city\n"
        "ann@example.com,ignored-for-existing,Berlin\n"
        "new@example.com,taken,Paris\n"
        "fresh@example.com,,Rome\n",
        encoding="utf-8",
    )
    summary = _import(workspace, path)
    assert (summary.created, summary.updated, summary.skipped, summary.failed) == (1, 1, 0, 1)
    with scopes_disabled():
        stored = {c.external_id: (c.email, c.attributes) for c in Customer.objects.order_by("pk")}
    assert stored == {
        "ann": ("ann@example.com", {"city": "Berlin"}),
        "taken": ("t@example.com", {}),
        "fresh@example.com": ("fresh@example.com", {"city": "Rome"}),
    }
    assert read_report(f"{path}.errors.csv") == {
        3: "the external id “taken” belongs to another customer"
    }


def test_xlsx_rows_import_with_their_sheet_row_numbers(workspace, tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Email", "Signed up", "Orders", "Member"])
    sheet.append(["a@example.com", date(2024, 5, 1), 3, True])
    sheet.append(["b@example.com", "2024-13-01", 1.5, False])
    sheet.append(["+1 555 0100", None, None, None])
    path = tmp_path / "people.xlsx"
    book.save(path)
    shape = inspect_file(str(path))
    assert (shape.kind, shape.header) == ("xlsx", ["Email", "Signed up", "Orders", "Member"])
    columns = [
        Column("email"),
        Column("attribute", "signed_up", "date"),
        Column("attribute", "orders", "number"),
        Column("attribute", "member", "boolean"),
    ]
    summary = _import(workspace, path, columns=columns)
    assert (summary.created, summary.failed) == (1, 2)
    with scopes_disabled():
        customer = Customer.objects.get()
    assert customer.attributes == {"signed_up": "2024-05-01", "orders": 3, "member": True}
    with open(f"{path}.errors.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:]] == ["3", "4"]
    assert rows[2][2] == "'+1 555 0100"  # what a spreadsheet would run is written as text


def test_the_report_writes_every_formula_start_as_text(workspace, tmp_path):
    """OWASP's list of what a spreadsheet runs: = + - @, and a tab or carriage return
    before one. Each bad row's cells come back with an apostrophe in front."""
    starts = ["=1+1", "+1 555", "-2", "@SUM(A1)", "\t=1", "\r=1"]
    path = tmp_path / "formulas.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "note"])
        writer.writerows([cell, cell] for cell in starts)  # not addresses: each row fails
    summary = _import(workspace, path)
    assert (summary.created, summary.failed) == (0, len(starts))
    with open(f"{path}.errors.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    # line, reason, then the cells as read (the note untrimmed, the address as written)
    assert [row[3] for row in rows] == [f"'{cell}" for cell in starts]
    assert all(row[1].endswith("is not an email address") for row in rows)


# What an address must be (README: one @ with something before it, a dot after it, no
# space, at most 254 characters), written out by hand.
ADDRESSES = {
    "ann@example.com": True,
    "Ann.Lee+news@mail.example.co.uk": True,
    "a@b.io": True,
    "not-an-email": False,
    "a@b": False,
    "a@b@c.com": False,
    "@example.com": False,
    "ann@": False,
    "ann@example": False,
    "ann lee@example.com": False,
    "ann@exa\tmple.com": False,
    "x" * 248 + "@e.com": True,  # 254 characters, the most
    "x" * 249 + "@e.com": False,  # 255
}


def test_each_address_is_imported_or_reported_by_the_rule(workspace, tmp_path):
    path = tmp_path / "addresses.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "n"])
        writer.writerows([address, i] for i, address in enumerate(ADDRESSES))
    summary = _import(workspace, path)
    good = [a for a, ok in ADDRESSES.items() if ok]
    assert (summary.created, summary.failed) == (len(good), len(ADDRESSES) - len(good))
    with scopes_disabled():
        stored = set(Customer.objects.filter(workspace=workspace).values_list("email", flat=True))
    assert stored == {a.lower() for a in good}
    report = read_report(f"{path}.errors.csv")
    bad_lines = {i + 2 for i, (a, ok) in enumerate(ADDRESSES.items()) if not ok}
    assert set(report) == bad_lines
    assert all(reason.endswith("is not an email address") for reason in report.values())


def test_a_file_that_is_not_a_table_is_refused(workspace, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty"):
        _import(workspace, empty)
    no_key = tmp_path / "no-key.csv"
    no_key.write_text("name,city\nAnn,Rome\n")
    with pytest.raises(ImportFileError, match="email address"):
        _import(workspace, no_key)
    with pytest.raises(ImportFileError, match="cannot be read"):
        _import(workspace, tmp_path / "missing.csv")


def _command(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = database_url("import-cli")
    return subprocess.run(
        [sys.executable, "manage.py", "import_customers", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.django_db(transaction=True)
def test_command_prints_the_summary_writes_errors_and_exits_0(workspace, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(
        "\ufeffEmail;Name;external_id\n"
        "a@example.com;Ann;A1\n"
        "bad-address;Bob;B1\n"
        "a@example.com;Ann again;A1\n"
        ";Nobody;N1\n".encode()
    )
    result = _command(workspace.slug, str(path))
    assert result.returncode == 0, result.stderr
    assert "created: 1, updated: 0, skipped: 1, failed: 2" in result.stdout
    assert read_report(f"{path}.errors.csv") == {
        2: "the same key is on line 4, which is imported instead",
        3: "“bad-address” is not an email address",
        5: "no email address",
    }
    with scopes_disabled():
        customer = Customer.objects.get(workspace=workspace)
    assert (customer.external_id, customer.attributes) == ("A1", {"name": "Ann again"})
    by_id = _command(workspace.slug, str(path), "--key", "external_id")
    assert by_id.returncode == 0, by_id.stderr
    # A1 is unchanged; B1 fails on its address; N1 is created without one.
    assert "created: 1, updated: 0, skipped: 2, failed: 1" in by_id.stdout


@pytest.mark.django_db(transaction=True)
def test_command_exits_non_zero_when_the_file_cannot_be_read(workspace, tmp_path):
    missing = _command(workspace.slug, str(tmp_path / "nope.csv"))
    assert missing.returncode != 0
    assert "cannot be read" in missing.stderr
    assert _command("no-such-workspace", str(tmp_path / "nope.csv")).returncode != 0


@pytest.mark.django_db(transaction=True)
def test_an_import_killed_midway_and_run_again_gives_each_customer_once(workspace, tmp_path):
    path = tmp_path / "big.csv"
    count = 300_000
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("email,external_id,n\n")
        for i in range(count):
            f.write(f"c{i}@example.com,ext-{i},{i}\n")
    with scopes_disabled():  # some exist already: the rerun must update, not duplicate
        Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"ext-{i}", email=f"c{i}@example.com")
            for i in range(0, count, 1000)
        )
    # Killed while copying rows, then while upserting them: neither leaves anything.
    assert _run_and_kill(workspace, path, at_percent=10) < 90
    assert _run_and_kill(workspace, path, at_percent=95) >= 95
    with scopes_disabled():
        assert Customer.objects.filter(workspace=workspace).count() == count // 1000
    result = _command(workspace.slug, str(path), timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"created: {count - count // 1000}, updated: {count // 1000}" in result.stdout
    with scopes_disabled():
        customers = Customer.objects.filter(workspace=workspace)
        assert customers.count() == count
        assert customers.values("email").distinct().count() == count
        assert customers.filter(attributes__n=count - 1).get().external_id == f"ext-{count - 1}"


def _run_and_kill(workspace, path, at_percent: int) -> int:
    """Run the command and SIGKILL it once it reports `at_percent` progress (95: all rows
    are copied and checked, and the upsert has begun); returns the percent it was killed
    at."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = database_url("import-killed")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "import_customers", workspace.slug, str(path), "-v", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    try:
        for line in process.stderr:
            if "rows read" in line and int(line.split("%")[0]) >= at_percent:
                process.send_signal(signal.SIGKILL)
                killed_at = int(line.split("%")[0])
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert killed_at is not None, "the import finished before it could be killed"
    return killed_at
