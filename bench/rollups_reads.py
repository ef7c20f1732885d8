"""The reads an exact incremental run cannot skip, timed alone: what any design that keeps
its state in PostgreSQL pays before it computes or writes anything.

For each shard of the change log (clickmap.rollups.SHARD_OF_CHANGE, one connection each,
at once, as `aggregate_now` runs them): claim and delete its rows, then read every click
of the pairs they name (the counted-click flags, cells and link spans need the pair's
history) and every click and open of their recipients (clickers, recipient days and
email spans need the recipient's). Each transaction is rolled back, so the change log
and the rollups are left as they were.
"""

import threading
import time

import psycopg

CLAIM = """
    DELETE FROM tracking_eventchange
    WHERE id = ANY(ARRAY(SELECT c.id FROM tracking_eventchange c {in_shard} true
                         ORDER BY c.id FOR UPDATE OF c SKIP LOCKED))
    RETURNING kind, delivery_id, link_id"""

# Each column the computation uses is aggregated, so no read is planned away.
HISTORY = """
    WITH pair AS (SELECT * FROM unnest(%(deliveries)s::bigint[], %(links)s::bigint[])
                  AS t(delivery_id, link_id)),
         recipient AS (SELECT DISTINCT delivery_id FROM unnest(%(recipients)s::bigint[])
                       AS t(delivery_id))
    SELECT
        (SELECT count(x.at) + count(x.id) + count(x.reliable) + count(x.device)
         FROM pair p CROSS JOIN LATERAL (
             SELECT x.at, x.id, x.reliable, x.device FROM tracking_clickevent x
             WHERE x.delivery_id = p.delivery_id AND x.link_id = p.link_id OFFSET 0) x),
        (SELECT count(x.at) + count(x.link_id) + count(x.reliable) + count(x.device)
         FROM recipient r CROSS JOIN LATERAL (
             SELECT x.at, x.link_id, x.reliable, x.device FROM tracking_clickevent x
             WHERE x.delivery_id = r.delivery_id OFFSET 0) x),
        (SELECT count(o.at) + count(o.reliable) + count(o.device)
         FROM recipient r CROSS JOIN LATERAL (
             SELECT o.at, o.reliable, o.device FROM tracking_openevent o
             WHERE o.delivery_id = r.delivery_id OFFSET 0) o)"""


def _shard(url: str, number: int, shards: int, out: dict) -> None:
    from clickmap.rollups import SHARD_OF_CHANGE

    with psycopg.connect(url) as db:
        db.execute("SET jit = off")
        started = time.perf_counter()
        changes = db.execute(CLAIM.format(in_shard=SHARD_OF_CHANGE), [shards, number]).fetchall()
        claimed = time.perf_counter()
        pairs = {(d, link) for kind, d, link in changes if kind == "c" and link}
        db.execute(
            HISTORY,
            {
                "deliveries": [d for d, _ in pairs],
                "links": [link for _, link in pairs],
                "recipients": [d for _, d, _ in changes],
            },
        ).fetchone()
        out[number] = (claimed - started, time.perf_counter() - claimed)
        db.rollback()


def time_reads(url: str, shards: int) -> tuple[float, float, float]:
    """(wall seconds, the slowest shard's claim seconds, its history-read seconds)."""
    out = {}
    threads = [threading.Thread(target=_shard, args=(url, n, shards, out)) for n in range(shards)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(out) != shards:
        raise RuntimeError("a shard's reads failed (see above)")
    claim, history = max(out.values(), key=sum)
    return wall, claim, history
