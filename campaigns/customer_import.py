"""Customer import: a CSV or XLSX file upserted into a workspace's customers.

The file is read as a stream and copied, row by row, into a temporary staging table with
PostgreSQL COPY; every check and the upsert itself are then set-based SQL, so a million
rows never sit in Python's memory. Rules (README "Importing customers"):

- CSV in UTF-8 with or without a BOM (UTF-16 with a BOM too; a file that is not UTF-8
  is read as Windows-1252), comma, semicolon or tab separated (guessed from the header
  line), with or without quotes. XLSX: the first sheet.
- The first row names the columns. Values are trimmed; an empty cell sets nothing.
- Upsert by email (case-insensitive; addresses are stored lower-cased) or by external id.
  An import by email never changes an existing customer's external id; a new customer
  gets the external id column's value, or else its email address.
- Attributes are typed: text, number (`-12.5`, `1e3`), date (`YYYY-MM-DD`) or boolean
  (true/false, yes/no, y/n, 1/0, on/off, t/f).
- A row is imported exactly, or reported with its line number and reason: bad rows fail,
  an earlier row with the same key as a later good row is skipped (the later one wins),
  and a row that would change nothing is skipped.
- The whole upsert is one transaction under a per-workspace lock: an import killed
  midway leaves nothing behind, and running it again gives each customer once.
"""

import codecs
import contextlib
import csv
import io
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from time import perf_counter

import psycopg
from django.conf import settings
from django.db import DatabaseError, DataError, connection, transaction
from django.utils import timezone

from campaigns.csv_cells import formula_safe
from campaigns.models import CustomerImport, Workspace

TYPES = ("text", "number", "date", "boolean")
FIELDS = ("email", "external_id", "attribute", "ignore")
DELIMITERS = (",", ";", "\t")
PREVIEW_ROWS = 10
COPY_CHUNK = 20_000  # rows per COPY statement; progress is reported between them
SNIFF_BYTES = 1 << 20
TRUE_WORDS = ("true", "yes", "y", "1", "on", "t")
FALSE_WORDS = ("false", "no", "n", "0", "off", "f")
NUMBER_RE = r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# An attribute name becomes a JSON key that segment rules can name.
ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_EMAIL_HEADERS = {"email", "e-mail", "mail", "email address", "e-mail address", "emailaddress"}
_EXTERNAL_ID_HEADERS = {
    "external_id",
    "external id",
    "externalid",
    "id",
    "customer id",
    "cookie id",
}
# What the text COPY format needs escaped, and what a text value cannot hold.
_SPECIAL = re.compile("[\\\\\n\r\x00\udc80-\udcff]")
_UNUSABLE = re.compile("[\x00\udc80-\udcff]")
# What a value is trimmed of: spaces, tabs and line breaks.
_WHITESPACE = "E' \\t\\r\\n\\f'"


class ImportFileError(ValueError):
    """The file itself cannot be imported (unreadable, empty, no key column…)."""


@dataclass
class FileShape:
    """What an upload is: its kind, text encoding and delimiter, header and first rows."""

    kind: str  # "csv" or "xlsx"
    encoding: str = "utf-8"
    delimiter: str = ","
    header: list[str] = field(default_factory=list)
    preview: list[list[str]] = field(default_factory=list)
    rows: int = 1  # XLSX: the sheet's last row number (for progress)


@dataclass
class Column:
    field: str  # one of FIELDS
    name: str = ""
    type: str = "text"

    def as_dict(self) -> dict:
        return {"field": self.field, "name": self.name, "type": self.type}


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    rows: int = 0
    # Seconds per phase (read and COPY, check, upsert, report): where an import's time goes.
    seconds: dict = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"created: {self.created}, updated: {self.updated}, "
            f"skipped: {self.skipped}, failed: {self.failed}"
        )


# --- Reading -------------------------------------------------------------------------


def inspect_file(path: str) -> FileShape:
    """The shape of the file at `path` (raises ImportFileError when it is unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise ImportFileError(f"The file cannot be read: {e.strerror or e}.") from e
    if head.startswith(b"PK\x03\x04"):
        shape = FileShape(kind="xlsx")
        shape.rows = _xlsx_last_row(path)
    else:
        shape = FileShape(kind="csv", encoding=_encoding(head))
        first = _first_line(head, shape.encoding)
        shape.delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d))))
    rows = iter_rows(path, shape)
    try:
        _, shape.header = next(rows)
    except StopIteration:
        raise ImportFileError("The file is empty: the first row must name the columns.") from None
    shape.header = [h.strip() for h in shape.header]
    if not any(shape.header):
        raise ImportFileError("The first row is empty: it must name the columns.")
    for _, row in rows:
        shape.preview.append(row)
        if len(shape.preview) == PREVIEW_ROWS:
            break
    return shape


def _encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < SNIFF_BYTES)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


def _first_line(head: bytes, encoding: str) -> str:
    text = head.decode(encoding, errors="replace")
    return text.splitlines()[0] if text else ""


def iter_rows(path: str, shape: FileShape) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells as text) for every row of the file, header included.

    CSV line numbers are the physical line a row starts on (a quoted value can span
    lines); XLSX ones are the sheet's row numbers. Bytes that are not text in the file's
    encoding come through as surrogates (surrogateescape), for the row to be reported."""
    if shape.kind == "xlsx":
        yield from _xlsx_rows(path)
        return
    with open(path, "rb") as raw:
        yield from csv_rows(raw, shape)


def csv_rows(raw, shape: FileShape) -> Iterator[tuple[int, list[str]]]:
    """iter_rows of an open binary CSV file; rows with no text at all are left out
    (blank lines are not rows)."""
    text = io.TextIOWrapper(raw, encoding=shape.encoding, errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=shape.delimiter)
    line = 1
    for row in reader:
        # (The first cell settles it for almost every row: no generator per row.)
        if row and (row[0].strip() or any(cell.strip() for cell in row)):
            yield line, row
        line = reader.line_num + 1
    text.detach()


def _xlsx_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    import openpyxl  # only XLSX uploads pay for the import
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as e:
        raise ImportFileError(f"The file is not a readable XLSX workbook ({e}).") from e
    try:
        sheet = book.worksheets[0]
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            if values and any(v is not None for v in values):
                yield number, [_cell_text(v) for v in values]
    finally:
        book.close()


def _xlsx_last_row(path: str) -> int:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as e:
        raise ImportFileError(f"The file is not a readable XLSX workbook ({e}).") from e
    try:
        return max(book.worksheets[0].max_row or 1, 1) if book.worksheets else 1
    finally:
        book.close()


def _cell_text(value) -> str:
    # Spreadsheet cells are typed already: write them the way the CSV rules read them.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- Guessing the mapping ------------------------------------------------------------


def guess_mapping(shape: FileShape) -> list[Column]:
    """A column mapping to confirm: email and external id columns by their header, every
    other column an attribute named after its header, typed by its preview values."""
    columns, taken = [], set()
    for i, header in enumerate(shape.header):
        lowered = header.strip().lower()
        values = [row[i] for row in shape.preview if i < len(row)]
        if lowered in _EMAIL_HEADERS and "email" not in taken:
            column = Column("email")
        elif lowered in _EXTERNAL_ID_HEADERS and "external_id" not in taken:
            column = Column("external_id")
        else:
            name = attribute_name(header)
            while name and name in taken:
                name = f"{name}_{i + 1}"[:63]
            column = Column("attribute", name, guess_type(values)) if name else Column("ignore")
            taken.add(name)
        if column.field != "attribute":
            taken.add(column.field)
        columns.append(column)
    return columns


def attribute_name(header: str) -> str:
    """The attribute a header names: lower case, words joined by underscores."""
    name = re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")[:63]
    if name and name[0].isdigit():
        name = f"_{name}"[:63]
    return name


def guess_type(values: list[str]) -> str:
    """The narrowest type every non-empty value fits (text when there is none)."""
    values = [v.strip() for v in values if v.strip()]
    if not values:
        return "text"
    if all(v.lower() in TRUE_WORDS + FALSE_WORDS for v in values) and not all(
        v in ("0", "1") for v in values
    ):
        return "boolean"
    if all(re.match(NUMBER_RE, v) for v in values):
        return "number"
    if all(re.match(DATE_RE, v) and _is_date(v) for v in values):
        return "date"
    return "text"


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def check_mapping(columns: list[Column], key: str) -> list[Column]:
    """The mapping, validated (raises ImportFileError with what to fix)."""
    if key not in CustomerImport.Key.values:
        raise ImportFileError(f"Unknown key {key!r}: use email or external_id.")
    seen: dict[str, int] = {}
    for column in columns:
        if column.field not in FIELDS:
            raise ImportFileError(f"Unknown column use {column.field!r}.")
        if column.field == "attribute":
            if not ATTRIBUTE_NAME_RE.match(column.name):
                raise ImportFileError(
                    f"Attribute name “{column.name}” must be letters, digits and underscores."
                )
            if column.type not in TYPES:
                raise ImportFileError(f"Unknown attribute type {column.type!r}.")
        if column.field != "ignore":
            label = column.name if column.field == "attribute" else column.field
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                raise ImportFileError(f"Two columns are mapped to “{label}”.")
    if key not in seen:
        label = "email address" if key == "email" else "external id"
        raise ImportFileError(f"No column is mapped to the {label}, the import's key.")
    return columns


# --- Importing -----------------------------------------------------------------------


def import_customers(
    workspace: Workspace,
    path: str,
    *,
    key: str = "email",
    columns: list[Column] | None = None,
    errors_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Upsert the customers of the file at `path` into `workspace`.

    `columns` maps the file's columns (default: guess_mapping). Writes every row that was
    not imported to `errors_path` as CSV (line, reason, then the row's cells); calls
    `progress(percent, rows_read)` as it goes. Exact: each row is imported as written or
    reported; idempotent: importing the same file again changes nothing.
    Raises ImportFileError when the file itself cannot be imported."""
    shape = inspect_file(path)
    columns = check_mapping(columns or guess_mapping(shape), key)
    if len(columns) != len(shape.header):
        raise ImportFileError("The mapping does not match the file's columns.")
    size = max(os.path.getsize(path), 1)
    summary = ImportSummary()
    with connection.cursor() as cursor, _import_settings(cursor):
        _create_staging(cursor, len(columns))
        try:
            started = perf_counter()
            summary.rows = _stage_plain(cursor, path, shape, size, progress)
            if summary.rows is None:
                summary.rows = _stage(cursor, path, shape, size, progress)
            summary.seconds["read and COPY"] = perf_counter() - started
            started = perf_counter()
            # Temporary tables only: outside the transaction.
            summary.rows = _check(cursor, columns, key)
            summary.seconds["check"] = perf_counter() - started
            if progress:
                progress(95, summary.rows)
            with transaction.atomic():
                # One import per workspace at a time: matching by email has no unique
                # index to settle two imports racing to create the same customer.
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s::int, %s::int)", [0x1A7C, workspace.pk]
                )
                started = perf_counter()
                _without_row_checks(cursor, workspace.pk)
                counts = _upsert(cursor, workspace.pk, key)
                summary.seconds["upsert"] = perf_counter() - started
                started = perf_counter()
            # Leaving the block commits (and runs the deferred foreign-key checks of every
            # new row when _without_row_checks could not do without them).
            summary.seconds["commit"] = perf_counter() - started
            summary.created, summary.updated = counts
            cursor.execute(
                "SELECT count(*) FILTER (WHERE skipped), count(*) FILTER (WHERE NOT skipped)"
                " FROM customer_import_report"
            )
            summary.skipped, summary.failed = cursor.fetchone()
            if errors_path:
                started = perf_counter()
                _write_errors(cursor, shape.header, errors_path)
                summary.seconds["report"] = perf_counter() - started
        finally:
            cursor.execute(
                "DROP TABLE IF EXISTS customer_import_rows, customer_import_checked,"
                " customer_import_report, customer_import_matches"
            )
    if progress:
        progress(100, summary.rows)
    return summary


# The import's sorts (keys, line order) and hashes fit in memory: work_mem for its
# session, put back after it.
IMPORT_WORK_MEM = "256MB"
# Its temporary tables too (a million rows are ~300 MB of them): the session's
# temp_buffers, which PostgreSQL lets a session set only before it uses a temporary
# table, so this stays for the session (memory the server takes as they fill).
IMPORT_TEMP_BUFFERS = "256MB"


@contextlib.contextmanager
def _import_settings(cursor):
    cursor.execute(
        "SELECT current_setting('work_mem'), set_config('work_mem', %s, false)",
        [IMPORT_WORK_MEM],
    )
    before = cursor.fetchone()[0]
    try:
        with transaction.atomic():
            cursor.execute("SELECT set_config('temp_buffers', %s, false)", [IMPORT_TEMP_BUFFERS])
    except DatabaseError:
        pass  # the session has used temporary tables: their buffers are fixed
    try:
        yield
    finally:
        cursor.execute("SELECT set_config('work_mem', %s, false)", [before])


def _without_row_checks(cursor, workspace_id: int) -> None:
    """For the import's transaction: no foreign-key check per new customer, no wait for
    the commit to reach the disk.

    Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: a million new customers
    queue a million checks of their workspace, run one by one at commit. Under
    session_replication_role = replica PostgreSQL queues none, and the one check they
    all share is made here: the workspace row, locked as each check would lock it
    (FOR KEY SHARE), so it cannot go before the commit. Only for a role allowed to set
    it, and only when every trigger of campaigns_customer is ENABLE ALWAYS (the segment
    membership log's are, for bulk loads like this one): a trigger that replica mode
    would silently skip keeps the per-row checks."""
    cursor.execute("SET LOCAL synchronous_commit = off")
    cursor.execute(
        """
        SELECT has_parameter_privilege('session_replication_role', 'SET')
           AND NOT EXISTS (SELECT FROM pg_trigger
                           WHERE tgrelid = 'campaigns_customer'::regclass
                             AND NOT tgisinternal AND tgenabled <> 'A')"""
    )
    if not cursor.fetchone()[0]:
        return
    cursor.execute("SELECT FROM campaigns_workspace WHERE id = %s FOR KEY SHARE", [workspace_id])
    if cursor.fetchone() is None:
        raise ImportFileError("The workspace no longer exists.")
    cursor.execute("SET LOCAL session_replication_role = replica")


def _create_staging(cursor, width: int) -> None:
    cells = ", ".join(f"c{i} text" for i in range(width))
    cursor.execute(
        "DROP TABLE IF EXISTS customer_import_rows, customer_import_checked, customer_import_report"
    )
    cursor.execute(f"CREATE TEMP TABLE customer_import_rows (line bigint, problem text, {cells})")


# Every character Python's str.strip() removes: a row of nothing else is a blank line.
_PY_WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
PLAIN_CHUNK = 2 << 20  # bytes per COPY statement of a plain file; progress between them


def _stage_plain(cursor, path: str, shape: FileShape, size: int, progress) -> int | None:
    """_stage for a plain file, with PostgreSQL parsing the CSV: a UTF-8 file with no
    quote, no NUL and no line break but LF or CRLF. Each physical line is then a row, so a
    row's line number is its place in the file; rows of nothing but spaces are staged too
    (_check leaves them out, as csv_rows does). Returns None (and stages nothing) when
    the file is not plain, or PostgreSQL refuses it (a row of the wrong width, a blank
    line, bytes that are not UTF-8): _stage reads it then, and reports such rows.

    Python's csv module and PostgreSQL's COPY read such a file alike; parsing it in
    Python took twice as long as the whole COPY."""
    if shape.kind != "csv" or shape.encoding not in ("utf-8", "utf-8-sig"):
        return None
    width = len(shape.header)
    names = ", ".join(f"c{i}" for i in range(width))
    delimiter = {"\t": "E'\\t'"}.get(shape.delimiter, f"'{shape.delimiter}'")
    copy_sql = (
        f"COPY customer_import_rows ({names}) FROM STDIN"
        f" (FORMAT csv, DELIMITER {delimiter}, ENCODING 'UTF8', HEADER %s)"
    )
    cursor.execute("CREATE TEMP SEQUENCE customer_import_line START 2")
    cursor.execute(
        "ALTER TABLE customer_import_rows ALTER line SET DEFAULT nextval('customer_import_line')"
    )
    try:
        with open(path, "rb") as f:
            first, rest, count = True, b"", 0
            while True:
                block = f.read(PLAIN_CHUNK)
                data = rest + block
                if block:
                    # Cut at the last line break: each COPY holds whole rows.
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                if data:
                    if b'"' in data or b"\x00" in data or b"\\." in data:
                        raise _NotPlain
                    if data.count(b"\r") != data.count(b"\r\n"):
                        raise _NotPlain
                    if first and not _names_columns(data, shape.delimiter):
                        raise _NotPlain  # blank lines before the header
                    count += data.count(b"\n")
                    # Each COPY its own transaction (a savepoint inside one): a refused
                    # one takes back only itself, and the progress between them is seen.
                    with (
                        transaction.atomic(),
                        cursor.copy(copy_sql % ("true" if first else "false")) as copy,
                    ):
                        copy.write(data)
                    first = False
                if not block:
                    break
                if progress:
                    progress(min(90, int(90 * f.tell() / size)), max(count - 1, 0))
    except (_NotPlain, DataError, psycopg.DataError):
        cursor.execute("TRUNCATE customer_import_rows")
        return None
    finally:
        cursor.execute("ALTER TABLE customer_import_rows ALTER line DROP DEFAULT")
        cursor.execute("DROP SEQUENCE IF EXISTS customer_import_line")
    return count  # lines, blank ones included: _check leaves those out


def _names_columns(data: bytes, delimiter: str) -> bool:
    """Whether the file's first line is its header (not a blank line before it)."""
    line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff")
    return bool(line.replace(delimiter, "").strip())


class _NotPlain(Exception):
    """The file needs Python's reading (quotes, stray carriage returns, NUL)."""


def _stage(cursor, path: str, shape: FileShape, size: int, progress) -> int:
    """COPY every data row into customer_import_rows, with a `problem` for rows that are
    bad as read (wrong number of cells, bytes that are not text). Returns the row count."""
    width = len(shape.header)
    raw = open(path, "rb")  # noqa: SIM115 (closed below; the xlsx path reads it for nothing)
    rows = csv_rows(raw, shape) if shape.kind == "csv" else _xlsx_rows(path)
    next(rows)  # the header
    count = 0
    try:
        done = False
        while not done:
            done = True
            with cursor.copy("COPY customer_import_rows FROM STDIN") as copy:
                lines = []
                special, tabs = _SPECIAL.search, width - 1
                for number, row in rows:
                    count += 1
                    joined = "\t".join(row)
                    # The common row inline (a million of them): right width, nothing to
                    # escape; the rest through _copy_line.
                    if len(row) == width and joined.count("\t") == tabs and not special(joined):
                        lines.append(f"{number}\t\\N\t{joined}\n")
                    else:
                        lines.append(_copy_line(number, row, width))
                    if len(lines) == 2000:
                        copy.write("".join(lines))
                        lines = []
                    if count % COPY_CHUNK == 0:
                        done = False
                        break
                if lines:
                    copy.write("".join(lines))
            if progress:
                # How far the reader is in the file (it reads ahead a little); the checks
                # and the upsert after the last row take the last tenth.
                done_part = raw.tell() / size if shape.kind == "csv" else count / shape.rows
                progress(min(90, int(90 * done_part)), count)
    finally:
        raw.close()
    return count


def _copy_line(number: int, row: list[str], width: int) -> str:
    problem = "\\N"
    if len(row) != width:
        problem = f"the row has {len(row)} cells, the header {width}"
        row = (row + [""] * width)[:width]
    joined = "\t".join(row)
    if _SPECIAL.search(joined) or joined.count("\t") != width - 1:
        if problem == "\\N" and any(_UNUSABLE.search(cell) for cell in row):
            problem = "the row holds bytes that are not text in the file's encoding, or NUL"
        row = [_escape(_UNUSABLE.sub("\ufffd", cell)) for cell in row]
        joined = "\t".join(row)
    return f"{number}\t{problem}\t{joined}\n"


def _escape(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _check(cursor, columns: list[Column], key: str) -> int:
    """customer_import_checked: every staged row with its key, email, external id and
    typed attributes, and the reason it is bad (NULL when good). Returns its row count.

    Three layers, each evaluated once per row (OFFSET 0 keeps the planner from folding
    them): the trimmed cells, then the reason, then the typed attributes of good rows.
    The checks are string functions, not regular expressions: they run on every cell of
    a million rows. A row whose every cell is spaces (as str.isspace, which a plain file's
    COPY staged) is a blank line: left out. The test stops at the first cell that is not
    empty and does not start with a space: almost every row's first."""
    cells = ", ".join(
        f"nullif(btrim(c{i}, {_WHITESPACE}), '') AS v{i}" for i in range(len(columns))
    )
    spaces = f"'{_PY_WHITESPACE}'"  # no quote nor backslash in it
    blank = " AND ".join(
        f"(v{i} IS NULL OR (strpos({spaces}, left(v{i}, 1)) > 0"
        f" AND translate(v{i}, {spaces}, '') = ''))"
        for i in range(len(columns))
    )
    email = ext = "NULL::text"
    reasons = ["problem"]
    attributes = []
    for i, column in enumerate(columns):
        v = f"v{i}"
        if column.field == "email":
            email = f"lower({v})"
            reasons.append(
                f"CASE WHEN {v} IS NOT NULL AND NOT (length({v}) <= 254"
                f" AND {v} LIKE '_%@_%._%' AND {v} NOT LIKE '%@%@%'"
                f" AND translate({v}, {_WHITESPACE}, '') = {v})"
                f" THEN format('“%s” is not an email address', {v}) END"
            )
        elif column.field == "external_id":
            ext = v
            reasons.append(
                f"CASE WHEN length({v}) > 254 THEN 'the external id is over 254 characters' END"
            )
        elif column.field == "attribute":
            name = column.name
            if column.type == "number":
                # Digits, one exponent, signs and a point, as PostgreSQL reads them: no
                # NaN, Infinity, 0x1F or 1_000.
                valid = (
                    f"(translate({v}, '0123456789eE.+-', '') = ''"
                    f" AND pg_input_is_valid({v}, 'numeric'))"
                )
                typed = f"{v}::numeric"
                what = "a number"
            elif column.type == "date":
                valid = (
                    f"(length({v}) = 10 AND translate({v}, '0123456789', '') = '--'"
                    f" AND substr({v}, 5, 1) = '-' AND pg_input_is_valid({v}, 'date'))"
                )
                typed = v
                what = "a date (YYYY-MM-DD)"
            elif column.type == "boolean":
                words = ", ".join(f"'{w}'" for w in TRUE_WORDS + FALSE_WORDS)
                trues = ", ".join(f"'{w}'" for w in TRUE_WORDS)
                valid = f"lower({v}) IN ({words})"
                typed = f"lower({v}) IN ({trues})"
                what = "true or false"
            else:
                valid, typed, what = "true", v, ""
            if what:
                reasons.append(
                    f"CASE WHEN {v} IS NOT NULL AND NOT {valid} THEN"
                    f" format('%s: “%s” is not {what}', '{name}', {v}) END"
                )
            attributes.append((name, f"CASE WHEN {v} IS NOT NULL THEN {typed} END"))
    key_expr = email if key == "email" else ext
    missing = "no email address" if key == "email" else "no external id"
    reasons.insert(1, f"CASE WHEN {key_expr} IS NULL THEN '{missing}' END")
    pairs = ", ".join(f"'{name}', {expr}" for name, expr in attributes)
    attrs = f"jsonb_strip_nulls(jsonb_build_object({pairs}))" if attributes else "'{}'::jsonb"
    cursor.execute(
        f"""
        CREATE TEMP TABLE customer_import_checked AS
        SELECT line, k, email, ext, reason,
               CASE WHEN reason IS NULL THEN {attrs} END AS attrs
        FROM (
            SELECT *, coalesce({", ".join(reasons)}) AS reason
            FROM (
                SELECT line, problem, {cells} FROM customer_import_rows OFFSET 0
            ) trimmed
            CROSS JOIN LATERAL (SELECT {key_expr} AS k, {email} AS email, {ext} AS ext) keys
            WHERE NOT ({blank})
            OFFSET 0
        ) checked"""  # noqa: S608
    )
    return cursor.rowcount


def _upsert(cursor, workspace_id: int, key: str) -> tuple[int, int]:
    """Report the rows that are not imported, then update and create customers from the
    rest. Returns (created, updated)."""
    # The last good row of each key wins; earlier good rows with that key are skipped.
    # (The keys on several rows are found by hashing, not sorting, the keys: usually
    # there is none, and then the rows are not read again.)
    cursor.execute(
        """
        CREATE TEMP TABLE customer_import_report AS
        SELECT line, reason, false AS skipped FROM customer_import_checked
        WHERE reason IS NOT NULL"""
    )
    cursor.execute(
        """
        WITH repeated AS (
            SELECT k, max(line) AS last FROM customer_import_checked
            WHERE reason IS NULL GROUP BY k HAVING count(*) > 1
        )
        INSERT INTO customer_import_report (line, reason, skipped)
        SELECT c.line,
               format('the same key is on line %s, which is imported instead', r.last), true
        FROM customer_import_checked c JOIN repeated r ON r.k = c.k
        WHERE c.reason IS NULL AND c.line <> r.last"""
    )
    cursor.execute(
        """
        DELETE FROM customer_import_checked c USING customer_import_report r
        WHERE c.line = r.line"""
    )
    # A first import into a workspace without customers matches nothing: no lookups.
    cursor.execute(
        "SELECT NOT EXISTS (SELECT FROM campaigns_customer WHERE workspace_id = %s)",
        [workspace_id],
    )
    if cursor.fetchone()[0]:
        return _insert_into_empty(cursor, workspace_id, key), 0
    if key == "external_id":
        return _upsert_by_external_id(cursor, workspace_id)
    return _upsert_by_email(cursor, workspace_id)


def _insert_into_empty(cursor, workspace_id: int, key: str) -> int:
    """_upsert's creations, when the workspace has no customer yet; returns how many.
    By email, a new customer's external id (the file's, else the address) must not be
    on a later row too."""
    if key == "email":
        cursor.execute(
            """
            WITH repeated AS (
                SELECT coalesce(ext, email) AS ext, max(line) AS last
                FROM customer_import_checked GROUP BY 1 HAVING count(*) > 1
            )
            INSERT INTO customer_import_report (line, reason, skipped)
            SELECT c.line, format('the external id “%s” is also on line %s', r.ext, r.last),
                   false
            FROM customer_import_checked c JOIN repeated r ON r.ext = coalesce(c.ext, c.email)
            WHERE c.line <> r.last"""
        )
        if cursor.rowcount:
            cursor.execute(
                """
                DELETE FROM customer_import_checked c USING customer_import_report r
                WHERE c.line = r.line AND NOT r.skipped"""
            )
    cursor.execute(
        """
        INSERT INTO campaigns_customer (workspace_id, external_id, email, attributes, created_at)
        SELECT %s, coalesce(ext, email, ''), coalesce(email, ''), attrs, now()
        FROM customer_import_checked ORDER BY line""",
        [workspace_id],
    )
    return cursor.rowcount


_CHANGES = """(c.email IS DISTINCT FROM coalesce(r.email, c.email)
               OR c.attributes IS DISTINCT FROM c.attributes || r.attrs)"""


def _upsert_by_external_id(cursor, workspace_id: int) -> tuple[int, int]:
    # Whether each matched row changes its customer, worked out once (a jsonb merge per
    # row): the unchanged rows are reported, the changed ones updated.
    cursor.execute(
        f"""
        CREATE TEMP TABLE customer_import_matches AS
        SELECT r.line, c.id, {_CHANGES} AS changed
        FROM customer_import_checked r JOIN campaigns_customer c
          ON c.workspace_id = %s AND c.external_id = r.ext""",  # noqa: S608
        [workspace_id],
    )
    cursor.execute(
        """
        INSERT INTO customer_import_report (line, reason, skipped)
        SELECT line, 'unchanged', true FROM customer_import_matches WHERE NOT changed"""
    )
    cursor.execute(
        """
        UPDATE campaigns_customer c
        SET email = coalesce(r.email, c.email), attributes = c.attributes || r.attrs
        FROM customer_import_checked r JOIN customer_import_matches m ON m.line = r.line
        WHERE c.id = m.id AND m.changed"""
    )
    updated = cursor.rowcount
    cursor.execute(
        """
        INSERT INTO campaigns_customer (workspace_id, external_id, email, attributes, created_at)
        SELECT %s, r.ext, coalesce(r.email, ''), r.attrs, now()
        FROM customer_import_checked r
        WHERE NOT EXISTS (SELECT FROM campaigns_customer c
                          WHERE c.workspace_id = %s AND c.external_id = r.ext)
        ORDER BY r.line""",
        [workspace_id, workspace_id],
    )
    return cursor.rowcount, updated


def _upsert_by_email(cursor, workspace_id: int) -> tuple[int, int]:
    cursor.execute(
        f"""
        CREATE TEMP TABLE customer_import_matches AS
        SELECT r.line, c.id, count(*) OVER (PARTITION BY r.line) AS n, {_CHANGES} AS changed
        FROM customer_import_checked r JOIN campaigns_customer c
          ON c.workspace_id = %s AND lower(c.email) = r.email""",  # noqa: S608
        [workspace_id],
    )
    # A new customer's external id: the file's, else the address; it must be free.
    cursor.execute(
        """
        INSERT INTO customer_import_report (line, reason, skipped)
        SELECT line, format('%%s customers have this email address', max(n)), false
        FROM customer_import_matches WHERE n > 1 GROUP BY line
        UNION ALL
        SELECT r.line, format('the external id “%%s” belongs to another customer',
                              coalesce(r.ext, r.email)), false
        FROM customer_import_checked r
        WHERE NOT EXISTS (SELECT FROM customer_import_matches m WHERE m.line = r.line)
          AND EXISTS (SELECT FROM campaigns_customer c WHERE c.workspace_id = %s
                      AND c.external_id = coalesce(r.ext, r.email))
        UNION ALL
        SELECT line, format('the external id “%%s” is also on line %%s', ext, last), false
        FROM (SELECT r.line, coalesce(r.ext, r.email) AS ext,
                     max(r.line) OVER (PARTITION BY coalesce(r.ext, r.email)) AS last
              FROM customer_import_checked r
              WHERE NOT EXISTS (SELECT FROM customer_import_matches m WHERE m.line = r.line)
             ) AS new
        WHERE line <> last""",
        [workspace_id],
    )
    cursor.execute(
        """
        DELETE FROM customer_import_checked c USING customer_import_report r
        WHERE c.line = r.line AND NOT r.skipped"""
    )
    cursor.execute(
        """
        INSERT INTO customer_import_report (line, reason, skipped)
        SELECT r.line, 'unchanged', true
        FROM customer_import_checked r JOIN customer_import_matches m ON m.line = r.line
        WHERE NOT m.changed"""
    )
    cursor.execute(
        """
        UPDATE campaigns_customer c
        SET email = r.email, attributes = c.attributes || r.attrs
        FROM customer_import_checked r JOIN customer_import_matches m ON m.line = r.line
        WHERE c.id = m.id AND m.changed"""
    )
    updated = cursor.rowcount
    cursor.execute(
        """
        INSERT INTO campaigns_customer (workspace_id, external_id, email, attributes, created_at)
        SELECT %s, coalesce(r.ext, r.email), r.email, r.attrs, now()
        FROM customer_import_checked r
        WHERE NOT EXISTS (SELECT FROM customer_import_matches m WHERE m.line = r.line)
        ORDER BY r.line""",
        [workspace_id],
    )
    return cursor.rowcount, updated


def _write_errors(cursor, header: list[str], errors_path: str) -> None:
    """The report as CSV: line, reason, then the row's cells as read (formula-safe).
    Unchanged rows are counted as skipped but not listed: a file imported again would
    list every row."""
    width = len(header)
    cells = ", ".join(f"s.c{i}" for i in range(width))
    tmp = f"{errors_path}.part"
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "reason", *header])
        # A server-side cursor (inside a transaction): the report never sits in memory.
        with transaction.atomic(), connection.connection.cursor(name="import_errors") as rows:
            rows.itersize = 5000
            rows.execute(
                f"""SELECT r.line, r.reason, {cells} FROM customer_import_report r
                    JOIN customer_import_rows s ON s.line = r.line
                    WHERE r.reason <> 'unchanged' ORDER BY r.line"""  # noqa: S608
            )
            for row in rows:
                writer.writerow([row[0], *(safe_cell(v) for v in row[1:])])
    os.replace(tmp, errors_path)


SHOWN_ERRORS = 20


def first_errors(errors_path: str, limit: int = SHOWN_ERRORS) -> tuple[list[tuple[int, str]], int]:
    """(line, reason) of the report's first `limit` rows, for the import's page, and how
    many rows the report holds in all: the page shows a few, the CSV has every one."""
    shown, count = [], 0
    try:
        with open(errors_path, encoding="utf-8", newline="") as report:
            rows = csv.reader(report)
            next(rows, None)  # the header
            for row in rows:
                count += 1
                if len(shown) < limit:
                    shown.append((int(row[0]), row[1]))
    except FileNotFoundError:
        pass
    return shown, count


def safe_cell(value) -> str:
    """A cell of the report as text a spreadsheet will not run (None: empty)."""
    return formula_safe("" if value is None else str(value))


# --- Imports from the web page (a CustomerImport row per upload) ----------------------


def upload_import(workspace: Workspace, uploaded, user=None) -> CustomerImport:
    """Keep an uploaded file under CUSTOMER_IMPORT_DIR and read its shape: a
    CustomerImport waiting for its mapping (raises ImportFileError, file removed)."""
    folder = os.path.join(settings.CUSTOMER_IMPORT_DIR, str(workspace.pk))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{uuid.uuid4().hex}.upload")
    with open(path, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    try:
        shape = inspect_file(path)
    except ImportFileError:
        os.remove(path)
        raise
    return CustomerImport.objects.create(
        workspace=workspace,
        file_name=os.path.basename(uploaded.name or "upload")[:255],
        path=path,
        columns=shape.header,
        mapping=[c.as_dict() for c in guess_mapping(shape)],
        created_by=user,
    )


def import_preview(customer_import: CustomerImport) -> list[list[str]]:
    """The first rows of an upload, for the mapping page."""
    try:
        return inspect_file(customer_import.path).preview
    except ImportFileError:
        return []


def start_import(customer_import: CustomerImport, *, key: str, columns: list[Column]) -> None:
    """Confirm the mapping and queue the import (raises ImportFileError)."""
    check_mapping(columns, key)
    if len(columns) != len(customer_import.columns):
        raise ImportFileError("The mapping does not match the file's columns.")
    updated = CustomerImport.objects.filter(
        pk=customer_import.pk, status=CustomerImport.Status.MAPPING
    ).update(key=key, mapping=[c.as_dict() for c in columns], status=CustomerImport.Status.QUEUED)
    if not updated:
        raise ImportFileError("This import has already started.")
    customer_import.refresh_from_db()


def run_import(customer_import: CustomerImport) -> CustomerImport:
    """Run a queued import (the Celery task's body): progress, then the summary, are
    written to its row as it goes. Running it again after it finished does nothing."""
    rows = CustomerImport.objects.filter(pk=customer_import.pk)
    claimed = rows.filter(
        status__in=[CustomerImport.Status.QUEUED, CustomerImport.Status.RUNNING]
    ).update(status=CustomerImport.Status.RUNNING, progress=0)
    if not claimed:
        return customer_import

    def progress(percent, count):
        rows.update(progress=percent, rows_read=count)

    try:
        summary = import_customers(
            customer_import.workspace,
            customer_import.path,
            key=customer_import.key,
            columns=[Column(**c) for c in customer_import.mapping],
            errors_path=customer_import.errors_path,
            progress=progress,
        )
    except ImportFileError as error:
        rows.update(
            status=CustomerImport.Status.FAILED, error=str(error), finished_at=timezone.now()
        )
    else:
        rows.update(
            status=CustomerImport.Status.DONE,
            progress=100,
            rows_read=summary.rows,
            created=summary.created,
            updated=summary.updated,
            skipped=summary.skipped,
            failed=summary.failed,
            finished_at=timezone.now(),
        )
    # The upload has served its purpose (the report is a file of its own); a task run
    # again after this finds the import finished and reads nothing.
    with contextlib.suppress(OSError):
        os.remove(customer_import.path)
    customer_import.refresh_from_db()
    return customer_import
