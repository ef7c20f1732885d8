"""Link inventories per second of a ~100 KB email on one core.

The email is the largest corpus template with its body repeated to about 100 KB.
Baseline: bare HTML5 parses per second of the same text (Lexbor, no inventory work),
so the ratio shows what the inventory adds on top of parsing.

Prints: bench: inventory value=<inventories/s> baseline=<parses/s> ratio=… goal=>=50/s
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaigns.html5tree import parse_document  # noqa: E402
from campaigns.inventory import inventory_links  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
TARGET_BYTES = 100 * 1024
SECONDS = 3.0
GOAL = 50


def email_of_about_100_kb() -> str:
    largest = max(CORPUS.glob("*.html"), key=lambda path: path.stat().st_size)
    page = largest.read_text(encoding="utf-8")
    body_start = page.index(">", page.index("<body")) + 1
    body_end = page.rindex("</body>")
    body = page[body_start:body_end]
    copies = max(0, round((TARGET_BYTES - len(page)) / len(body)))
    return page[:body_end] + body * copies + page[body_end:]


def rate(work, text: str) -> float:
    """Calls per second of ``work(text)`` over about SECONDS of wall time."""
    work(text)  # warm up
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS:
        work(text)
        calls += 1
    return calls / elapsed


def main() -> int:
    email = email_of_about_100_kb()
    links = len(inventory_links(email))
    baseline = rate(parse_document, email)
    value = rate(inventory_links, email)
    print(
        f"# {len(email.encode()) / 1024:.0f} KB email, {links} links",
        file=sys.stderr,
    )
    print(
        f"bench: inventory value={value:.1f} baseline={baseline:.1f} "
        f"ratio={value / baseline:.3f} goal=>={GOAL}/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
