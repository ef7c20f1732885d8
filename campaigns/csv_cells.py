"""Text written into a CSV or XLSX cell that a spreadsheet must not run.

OWASP "CSV Injection": a cell starting with = + - @ (or a tab or carriage return that
some spreadsheets skip before one) is read as a formula when the file is opened. Every
export and report of the product writes its text through `formula_safe`: customers'
and the import report's cells (campaigns), the click map's exports (clickmap)."""

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(text: str) -> str:
    """`text`, with a leading apostrophe when a spreadsheet would run it."""
    return f"'{text}" if text.startswith(FORMULA_TRIGGERS) else text
