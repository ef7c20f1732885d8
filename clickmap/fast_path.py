"""The in-order fast path: events later than everything applied for their pair and
recipient, applied from the stored state without reading the history.

Almost every event arrives in order: a click on a campaign just sent, and a late click
on an old one too, comes after every stored event of its (delivery, link) pair and of its
recipient. For such an event the pair's next counters, day cell and spans follow from a
few stored values (docs/aggregation.md, "The in-order fast path"):

- the pair (PairRollup): its counters, the time of its last click applied (`last_at`) and
  of its last counted click, all and reliable (`counted_at_*`: window mode counts a click
  when no counted click lies within the window before it; "ever" mode, when it is the
  first);
- the pair's last click day per device, all and reliable (its PairDayRollup rows): a new
  click day d after the last one p adds the span (p, d];
- the recipient (RecipientRollup): its flags and `last_at`, and its last day per device
  and flag (its RecipientDayRollup rows).

So each pair costs one probe of its state and one index range of its new clicks (those
after `last_at`), each recipient one probe of its state and its new opens. A pair or
recipient goes to the recompute from history (clickmap/rollups.py) instead when a change
row of the batch does not say when its events happened (a deletion) or says a time not
after the stored `last_at` (a late event, or a reclassified one), or when its state is
not known. Either way the stored rows are exactly what was added to the shared counters,
so the two paths can follow each other in any order.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from clickmap.models import COUNTERS, DAY_ZERO, RECIPIENT_FLAGS

ANY_DEVICE = ""


@dataclass
class PairChange:
    """A pair named by the batch's change rows: (variant, link, customer) is its key."""

    workspace_id: int
    delivery_id: int
    hours: int  # the workspace's unique-click window; 0: "ever"
    earliest: datetime | None  # the change rows' earliest event time; None: unknown


@dataclass
class RecipientChange:
    """A recipient named by the batch's change rows: (variant, customer) is its key."""

    workspace_id: int
    delivery_id: int
    clicks: bool = False  # a click change row names one of its pairs
    opens: bool = False  # an open change row names it
    earliest: datetime | None = None
    known: bool = True  # every change row said when its events happened
    proof: tuple[bool, bool] | None = None  # clicked (all, rel) shown by the batch's pairs

    def saw(self, at: datetime | None) -> None:
        if at is None:
            self.known = False
        elif self.earliest is None or at < self.earliest:
            self.earliest = at


@dataclass
class PairState:
    """A locked PairRollup row: what the fast path needs of it."""

    id: int
    workspace_id: int
    total_all: int
    total_rel: int
    window_all: int
    window_rel: int
    last_at: datetime | None
    counted_at_all: datetime | None
    counted_at_rel: datetime | None

    def applies(self, change: PairChange) -> bool:
        """Whether the change's events all come after the state (or there is none)."""
        if change.earliest is None:
            return False
        if self.last_at is None:
            return self.total_all == 0  # no click applied yet (else: state unknown)
        return change.earliest > self.last_at


@dataclass
class RecipientState:
    id: int
    workspace_id: int
    clicked_all: bool
    clicked_rel: bool
    opened_all: bool
    opened_rel: bool
    last_at: datetime | None

    def applies(self, change: RecipientChange) -> bool:
        if not change.known or change.earliest is None:
            return False
        if self.last_at is None:
            return not any(self.flags())
        return change.earliest > self.last_at

    def flags(self) -> tuple[bool, ...]:
        return tuple(getattr(self, f) for f in RECIPIENT_FLAGS)


@dataclass
class Click:
    at: datetime
    reliable: bool
    device: str


@dataclass
class Deltas:
    """What a batch adds to the shared counters, keyed as clickmap.counters.add_counters
    wants them (the workspace first): the fast path's and the recompute's, summed."""

    links: dict = field(default_factory=lambda: defaultdict(lambda: [0] * 6))
    link_days: dict = field(default_factory=lambda: defaultdict(lambda: [0] * 4))
    link_spans: Counter = field(default_factory=Counter)
    emails: dict = field(default_factory=lambda: defaultdict(lambda: [0] * 4))
    email_spans: Counter = field(default_factory=Counter)
    # Per segment: {table: {(workspace, segment, …key): [counters]}}, and the email spans
    # (added after the others: clickmap.spans.add_deltas_sql).
    segments: dict = field(default_factory=lambda: defaultdict(dict))
    segment_email_spans: Counter = field(default_factory=Counter)

    def add(self, table: dict, key: tuple, values) -> None:
        row = table.get(key)
        if row is None:
            table[key] = list(values)
        else:
            for i, value in enumerate(values):
                row[i] += value

    def add_segment(self, name: str, key: tuple, values) -> None:
        self.add(self.segments[name], key, values)

    def segment_rows(self) -> dict:
        return {
            name: [(*key, *values) for key, values in rows.items()]
            for name, rows in self.segments.items()
        }


def day_of(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _span_step(last: dict, chain, device: str, day: date, spans: Counter, key: tuple) -> None:
    """A day in a chain (per device and for any device): a span from the chain's last day
    when it is later (in order, it is never earlier)."""
    for dev in (device, ANY_DEVICE):
        previous = last.get((chain, dev))
        if previous is None or day > previous:
            spans[(*key, dev, *chain, day, previous or DAY_ZERO)] += 1
            last[(chain, dev)] = day


@dataclass
class PairResult:
    """A fast pair's new state and what it adds."""

    state: PairState
    cells: dict  # (day, device) -> [total_all, total_rel, window_all, window_rel] added
    spans: Counter  # (device, reliable, day, since) -> n
    proof: tuple[bool, bool]  # clicked (all, rel) after
    clicks: list  # the clicks applied, for the recipient


def apply_pair(state: PairState, hours: int, last_days: dict, clicks: list[Click]) -> PairResult:
    """Apply clicks (in time order, all after state.last_at) to the pair's state.

    last_days: {((reliable,), device): day} of the pair's stored day rows ('' any device).
    A click is counted (docs/metrics.md) when the pair has no counted click yet, or in
    window mode when the last counted one lies `hours` or more before it; reliable-only
    counts chain over reliable clicks alone.
    """
    window = timedelta(hours=hours)
    cells, spans = {}, Counter()
    last = dict(last_days)
    for click in clicks:
        counted_all = state.counted_at_all is None or (
            hours > 0 and click.at >= state.counted_at_all + window
        )
        if counted_all:
            state.counted_at_all = click.at
        counted_rel = click.reliable and (
            state.counted_at_rel is None
            or (hours > 0 and click.at >= state.counted_at_rel + window)
        )
        if counted_rel:
            state.counted_at_rel = click.at
        added = (1, int(click.reliable), int(counted_all), int(counted_rel))
        day = day_of(click.at)
        cell = cells.setdefault((day, click.device), [0, 0, 0, 0])
        for i, value in enumerate(added):
            cell[i] += value
        for c, value in zip(COUNTERS, added, strict=True):
            setattr(state, c, getattr(state, c) + value)
        _span_step(last, (False,), click.device, day, spans, ())
        if click.reliable:
            _span_step(last, (True,), click.device, day, spans, ())
        state.last_at = click.at
    return PairResult(state, cells, spans, (state.total_all > 0, state.total_rel > 0), list(clicks))


# A recipient's flags, in RECIPIENT_FLAGS order, set by an event, and the email span
# chains (kind, reliable) of each flag.
CHAINS = (("c", False), ("c", True), ("o", False), ("o", True))


def event_flags(is_click: bool, reliable: bool) -> tuple[bool, bool, bool, bool]:
    """clicked_all, clicked_rel, opened_all, opened_rel: a click implies an open."""
    return (is_click, is_click and reliable, True, reliable)


@dataclass
class RecipientEvent:
    at: datetime
    is_click: bool
    reliable: bool
    device: str


@dataclass
class RecipientResult:
    state: RecipientState
    days: dict  # (day, device) -> flags to set (OR)
    spans: Counter  # (kind, device, reliable, day, since) -> n
    turned_on: tuple[int, int, int, int]  # flags off before and on after (0/1)


def apply_recipient(
    state: RecipientState, last_days: dict, events: list[RecipientEvent]
) -> RecipientResult:
    """Apply events (in time order, all after state.last_at) to the recipient's state.
    last_days: {((kind, reliable), device): day} of its stored day rows."""
    before = state.flags()
    days, spans = {}, Counter()
    last = dict(last_days)
    for event in events:
        flags = event_flags(event.is_click, event.reliable)
        day = day_of(event.at)
        cell = days.setdefault((day, event.device), [False] * 4)
        for i, on in enumerate(flags):
            if on:
                cell[i] = True
                setattr(state, RECIPIENT_FLAGS[i], True)
                _span_step(last, CHAINS[i], event.device, day, spans, ())
        state.last_at = event.at
    after = state.flags()
    turned_on = tuple(int(a and not b) for a, b in zip(after, before, strict=True))
    return RecipientResult(state, days, spans, turned_on)


# --- Statements ---------------------------------------------------------------------------


def _raw(cursor):
    """A psycopg cursor on the same connection (and transaction) that binds parameters on
    the server, in binary: Django's binds them client-side, writing every array of a
    batch (tens of thousands of ids and times) as a quoted literal, which took more time
    than the statements' own work at full scale."""
    return psycopg.Cursor(cursor.connection)


def _execute(cursor, sql: str, params) -> None:
    with _raw(cursor) as raw:
        raw.execute(sql, params, binary=True)


def _fetch(cursor, sql: str, params) -> list:
    with _raw(cursor) as raw:
        raw.execute(sql, params, binary=True)
        return raw.fetchall()


def pair_states(cursor, keys: list) -> dict:
    """{(variant, link, customer): PairState} of the batch's pairs (locked, in key order)."""
    rows = _fetch(
        cursor,
        """SELECT t.variant_id, t.link_id, t.customer_id, r.id, r.workspace_id, r.total_all,
                  r.total_rel, r.window_all, r.window_rel, r.last_at, r.counted_at_all,
                  r.counted_at_rel
           FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])
                AS t(variant_id, link_id, customer_id)
           CROSS JOIN LATERAL (
               SELECT r.* FROM clickmap_pairrollup r WHERE r.variant_id = t.variant_id
               AND r.link_id = t.link_id AND r.customer_id = t.customer_id OFFSET 0) r""",
        [list(column) for column in zip(*keys, strict=True)],
    )
    return {tuple(row[:3]): PairState(*row[3:]) for row in rows}


def pair_news(cursor, fast: list) -> tuple[dict, dict]:
    """For fast pairs [(PairState, PairChange, link)]: each one's stored last click day
    per chain and device ({pair id: {((reliable,), device): day}}) and its clicks after
    its last_at in time order ({pair id: [Click]}): one probe of its day rows and one
    range of clickmap_click_pair_idx each."""
    ids = [state.id for state, _, _ in fast]
    days = defaultdict(dict)
    for pair, device, last_all, last_rel in _fetch(
        cursor,
        """SELECT x.pair_id, x.device, max(x.day), max(x.day) FILTER (WHERE x.total_rel > 0)
           FROM unnest(%s::bigint[]) AS t(id) CROSS JOIN LATERAL (
               SELECT x.pair_id, x.device, x.day, x.total_rel FROM clickmap_pairdayrollup x
               WHERE x.pair_id = t.id OFFSET 0) x
           GROUP BY x.pair_id, x.device""",
        [ids],
    ):
        for chain, day in (((False,), last_all), ((True,), last_rel)):
            if day is not None:
                days[pair][(chain, device)] = day
                if day > days[pair].get((chain, ANY_DEVICE), DAY_ZERO):
                    days[pair][(chain, ANY_DEVICE)] = day
    clicks = defaultdict(list)
    for pair, at, reliable, device in _fetch(
        cursor,
        """SELECT t.id, e.at, e.reliable, e.device
           FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[])
                AS t(id, delivery_id, link_id, after)
           CROSS JOIN LATERAL (
               SELECT e.at, e.id, e.reliable, e.device FROM tracking_clickevent e
               WHERE e.delivery_id = t.delivery_id AND e.link_id = t.link_id
               AND e.at > coalesce(t.after, '-infinity') OFFSET 0) e
           ORDER BY t.id, e.at, e.id""",
        [
            ids,
            [change.delivery_id for _, change, _ in fast],
            [link for _, _, link in fast],
            [state.last_at for state, _, _ in fast],
        ],
    ):
        clicks[pair].append(Click(at, reliable, device))
    return days, clicks


def write_pairs(cursor, results: list) -> None:
    """Write fast pairs' new state and add their cells to their day rows.
    results: [(variant, link, customer), PairResult] in key order."""
    changed = [(key, r) for key, r in results if r.cells]
    if not changed:
        return
    states = [r.state for _, r in changed]
    _execute(
        cursor,
        f"""UPDATE clickmap_pairrollup r
            SET {", ".join(f"{c} = t.{c}" for c in COUNTERS)}, last_at = t.last_at,
                counted_at_all = t.counted_at_all, counted_at_rel = t.counted_at_rel
            FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::int[], %s::int[],
                        %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])
                 AS t(id, {", ".join(COUNTERS)}, last_at, counted_at_all, counted_at_rel)
            WHERE r.id = t.id AND r.id = ANY(%s::bigint[])""",  # noqa: S608 (names are ours)
        [
            [s.id for s in states],
            *([getattr(s, c) for s in states] for c in COUNTERS),
            [s.last_at for s in states],
            [s.counted_at_all for s in states],
            [s.counted_at_rel for s in states],
            [s.id for s in states],  # the rows by their key: no join over the whole table
        ],
    )
    cells = sorted(
        (*key, day, device, r.state.id, r.state.workspace_id, *values)
        for key, r in changed
        for (day, device), values in r.cells.items()
    )
    columns = ("variant_id", "link_id", "customer_id", "day", "device", "pair_id", "workspace_id")
    types = ("bigint", "bigint", "bigint", "date", "text", "bigint", "bigint")
    _execute(
        cursor,
        f"""INSERT INTO clickmap_pairdayrollup AS x ({", ".join((*columns, *COUNTERS))})
            SELECT * FROM unnest({", ".join(f"%s::{t}[]" for t in types)},
                                 {", ".join("%s::int[]" for _ in COUNTERS)})
            ON CONFLICT (variant_id, link_id, customer_id, day, device) DO UPDATE
            SET {", ".join(f"{c} = x.{c} + excluded.{c}" for c in COUNTERS)}""",  # noqa: S608
        [list(column) for column in zip(*cells, strict=True)],
    )


def recipient_states(cursor, keys: list) -> dict:
    """{(variant, customer): RecipientState} of the batch's recipients (locked)."""
    rows = _fetch(
        cursor,
        f"""SELECT t.variant_id, t.customer_id, r.id, r.workspace_id,
                   {", ".join(f"r.{f}" for f in RECIPIENT_FLAGS)}, r.last_at
            FROM unnest(%s::bigint[], %s::bigint[]) AS t(variant_id, customer_id)
            CROSS JOIN LATERAL (
                SELECT r.* FROM clickmap_recipientrollup r WHERE r.variant_id = t.variant_id
                AND r.customer_id = t.customer_id OFFSET 0) r""",  # noqa: S608
        [list(column) for column in zip(*keys, strict=True)],
    )
    return {tuple(row[:2]): RecipientState(*row[2:]) for row in rows}


def recipient_news(cursor, fast: list) -> tuple[dict, dict]:
    """For fast recipients [((variant, customer), RecipientState, RecipientChange)]: each
    one's stored last day per chain and device ({key: {((kind, reliable), device): day}})
    and its opens after its last_at ({key: [RecipientEvent]})."""
    keys = [key for key, _, _ in fast]
    days = defaultdict(dict)
    for variant, customer, device, *lasts in _fetch(
        cursor,
        f"""SELECT x.variant_id, x.customer_id, x.device,
                   {", ".join(f"max(x.day) FILTER (WHERE x.{f})" for f in RECIPIENT_FLAGS)}
            FROM unnest(%s::bigint[], %s::bigint[]) AS t(variant_id, customer_id)
            CROSS JOIN LATERAL (
                SELECT x.* FROM clickmap_recipientdayrollup x
                WHERE x.variant_id = t.variant_id AND x.customer_id = t.customer_id
                OFFSET 0) x
            GROUP BY x.variant_id, x.customer_id, x.device""",  # noqa: S608
        [[k[0] for k in keys], [k[1] for k in keys]],
    ):
        mine = days[(variant, customer)]
        for chain, day in zip(CHAINS, lasts, strict=True):
            if day is not None:
                mine[(chain, device)] = day
                if day > mine.get((chain, ANY_DEVICE), DAY_ZERO):
                    mine[(chain, ANY_DEVICE)] = day
    opens = defaultdict(list)
    for variant, customer, at, reliable, device in _fetch(
        cursor,
        """SELECT t.variant_id, t.customer_id, o.at, o.reliable, o.device
           FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[])
                AS t(variant_id, customer_id, delivery_id, after)
           CROSS JOIN LATERAL (
               SELECT o.at, o.id, o.reliable, o.device FROM tracking_openevent o
               WHERE o.delivery_id = t.delivery_id
               AND o.at > coalesce(t.after, '-infinity') OFFSET 0) o
           ORDER BY o.at, o.id""",
        [
            [k[0] for k in keys],
            [k[1] for k in keys],
            [change.delivery_id for _, _, change in fast],
            [state.last_at for _, state, _ in fast],
        ],
    ):
        opens[(variant, customer)].append(RecipientEvent(at, False, reliable, device))
    return days, opens


def write_recipients(cursor, results: list) -> None:
    """Write fast recipients' flags and last_at and OR their new flags into their day
    rows. results: [((variant, customer), RecipientResult)] in key order."""
    if not results:
        return
    states = [r.state for _, r in results]
    _execute(
        cursor,
        f"""UPDATE clickmap_recipientrollup r
            SET {", ".join(f"{f} = t.{f}" for f in RECIPIENT_FLAGS)}, last_at = t.last_at
            FROM unnest(%s::bigint[], %s::bool[], %s::bool[], %s::bool[], %s::bool[],
                        %s::timestamptz[])
                 AS t(id, {", ".join(RECIPIENT_FLAGS)}, last_at)
            WHERE r.id = t.id AND r.id = ANY(%s::bigint[])""",  # noqa: S608
        [
            [s.id for s in states],
            *([getattr(s, f) for s in states] for f in RECIPIENT_FLAGS),
            [s.last_at for s in states],
            [s.id for s in states],  # the rows by their key: no join over the whole table
        ],
    )
    rows = sorted(
        (*key, day, device, r.state.workspace_id, *flags)
        for key, r in results
        for (day, device), flags in r.days.items()
    )
    if not rows:
        return
    columns = ("variant_id", "customer_id", "day", "device", "workspace_id")
    types = ("bigint", "bigint", "date", "text", "bigint")
    _execute(
        cursor,
        f"""INSERT INTO clickmap_recipientdayrollup AS x ({", ".join((*columns, *RECIPIENT_FLAGS))})
            SELECT * FROM unnest({", ".join(f"%s::{t}[]" for t in types)},
                                 {", ".join("%s::bool[]" for _ in RECIPIENT_FLAGS)})
            ON CONFLICT (variant_id, customer_id, day, device) DO UPDATE
            SET {", ".join(f"{f} = x.{f} OR excluded.{f}" for f in RECIPIENT_FLAGS)}""",  # noqa: S608
        [list(column) for column in zip(*rows, strict=True)],
    )


def members(cursor, customers) -> dict:
    """{customer: [segment ids]} as of the last aggregation (clickmap/segment_rollups.py)."""
    found = defaultdict(list)
    if customers:
        for customer, segment in _fetch(
            cursor,
            "SELECT customer_id, segment_id FROM clickmap_segmentmember "
            "WHERE customer_id = ANY(%s::bigint[])",
            [sorted(customers)],
        ):
            found[customer].append(segment)
    return found
