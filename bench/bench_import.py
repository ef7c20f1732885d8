"""Customer import at a million rows: `manage.py import_customers` against PostgreSQL COPY.

Data: one CSV of 1,000,000 customers (email, external id and 8 attributes: first and last
name, country, city as text; age and score as numbers; a sign-up date; a yes/no flag),
~120 MB. In its own database (clickmap_bench_import on the embedded server, or on
BENCH_IMPORT_PG, e.g. postgresql://postgres@127.0.0.1:5432), dropped, recreated and
migrated each run.

Floor: `COPY plain_table FROM STDIN (FORMAT csv, HEADER)` of the same file, streamed from
this process into a table of 10 text columns with no index: moving the bytes into
PostgreSQL and nothing else. The import does that (into its staging table) and then
checks every value, types the attributes and upserts into campaigns_customer with its
indexes and triggers. Timed: the whole command, from process start to exit, into a
workspace without customers (1M created), then again (1M unchanged rows: skipped).
Peak memory is the command's maximum resident set size (os.wait4's rusage).

Table floor: the same customers as the import stores them (typed, attributes as JSON),
written by this script in COPY's text format and copied straight into campaigns_customer
under the import's own session settings, in a transaction rolled back after it: what
PostgreSQL takes to store the finished rows with the table's indexes and triggers, with
no reading, checking or matching at all. It bounds from below what any import into this
schema can reach, and says how much of the import's time is the table's.

  bench: import_1m_customers value=<s> baseline=<s of the COPY> ratio=… goal=ratio<=3
  bench: import_1m_customers_peak_rss_mb value=<MB> goal=<300
  bench: import_1m_customers_again value=<s> baseline=<s of the COPY> ratio=… goal=info
  bench: import_1m_customers_table_floor value=<s> baseline=<s of the COPY> ratio=… goal=info

The import's result is checked (1M customers, the counts printed); the script exits
non-zero when it is wrong. A missed speed goal is only printed.
Usage: bench/bench_import.py [--rows N]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = os.environ.get("BENCH_IMPORT_DB", "clickmap_bench_import")
SLUG = "bench-import"
FIRST = ["Ann", "Bob", "Carla", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivo", "Jun"]
LAST = ["Lee", "Stone", "Müller", "García", "Rossi", "Novak", "Kim", "Smith", "Dubois"]
COUNTRIES = ["DE", "FR", "GB", "US", "ES", "IT", "PL", "NL", "SE", "JP"]
CITIES = ["Berlin", "Paris", "London", "Austin", "Madrid", "Rome", "Kraków", "Delft"]


def server() -> tuple[str, str]:
    """(admin connection string, the bench database's), the embedded server's socket or
    BENCH_IMPORT_PG's server."""
    given = os.environ.get("BENCH_IMPORT_PG")
    if given:
        return f"{given}/postgres", f"{given}/{DB_NAME}"
    from clickmap import embedded_db

    socket = embedded_db.start(ROOT / "var" / "postgres")
    query = f"?host={socket}&port=5432"
    return f"postgresql://postgres@/postgres{query}", f"postgresql://postgres@/{DB_NAME}{query}"


def write_csv(path: Path, typed_path: Path, rows: int, workspace_id: int) -> None:
    """The CSV to import, and the same customers as campaigns_customer rows in COPY's
    text format (workspace, external id, email, attributes, created_at)."""
    rng = random.Random(7)
    start = date(2015, 1, 1)
    with (
        open(path, "w", encoding="utf-8", newline="") as f,
        open(typed_path, "w", encoding="utf-8", newline="") as typed,
    ):
        f.write("email,external_id,first_name,last_name,country,city,age,score,signed_up,vip\n")
        for i in range(rows):
            first, last = FIRST[i % 10], rng.choice(LAST)
            country, city, age = rng.choice(COUNTRIES), rng.choice(CITIES), rng.randint(18, 90)
            score, signed_up, vip = (
                rng.randint(0, 10000) / 100,
                start + timedelta(days=i % 3650),
                i % 7 == 0,
            )
            email = f"{first.lower()}.{i}@example.com"
            f.write(
                f"{email},cust-{i},{first},{last},{country},{city},{age},{score},{signed_up},"
                f"{'yes' if vip else 'no'}\n"
            )
            attributes = {
                "first_name": first,
                "last_name": last,
                "country": country,
                "city": city,
                "age": age,
                "score": score,
                "signed_up": str(signed_up),
                "vip": vip,
            }
            typed.write(
                f"{workspace_id}\tcust-{i}\t{email}\t"
                f"{json.dumps(attributes, ensure_ascii=False)}\t2026-01-01 00:00:00+00\n"
            )


def table_floor(url: str, typed_path: Path) -> float:
    """Seconds to COPY the finished rows into campaigns_customer (rolled back)."""
    with psycopg.connect(url) as db:
        db.execute("SET synchronous_commit = off")
        # The import's own way round per-row foreign-key checks (it is a superuser here).
        db.execute("SET session_replication_role = replica")
        started = time.perf_counter()
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY campaigns_customer (workspace_id, external_id, email, attributes,"
                " created_at) FROM STDIN"
            ) as copy,
            open(typed_path, "rb") as f,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        db.rollback()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM campaigns_customer")  # the import finds the table as it was
        db.execute("VACUUM clickmap_membershipchange")
    return elapsed


def copy_floor(url: str, path: Path) -> tuple[float, int]:
    with psycopg.connect(url, autocommit=True) as db:
        columns = ", ".join(f"c{i} text" for i in range(10))
        db.execute("DROP TABLE IF EXISTS bench_copy_floor")
        db.execute(f"CREATE TABLE bench_copy_floor ({columns})")
        started = time.perf_counter()
        with (
            db.cursor() as cursor,
            cursor.copy("COPY bench_copy_floor FROM STDIN (FORMAT csv, HEADER true)") as copy,
            open(path, "rb") as f,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        count = db.execute("SELECT count(*) FROM bench_copy_floor").fetchone()[0]
        db.execute("DROP TABLE bench_copy_floor")
    return elapsed, count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    admin, url = server()
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": url.replace("postgresql://", "postgres://", 1),
        "SECRET_KEY": "bench-import-" + "x" * 48,
        "DEBUG": "0",
        "HTTPS_ONLY": "0",
        "STATIC_MANIFEST": "0",
        "DJANGO_SETTINGS_MODULE": "clickmap.settings",
    }
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            f"from campaigns.models import Workspace; Workspace.objects.create(name='Bench',"
            f" slug='{SLUG}')",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with psycopg.connect(url) as db:
        workspace_id = db.execute(
            "SELECT id FROM campaigns_workspace WHERE slug = %s", [SLUG]
        ).fetchone()[0]
    with tempfile.TemporaryDirectory() as folder:
        path, typed_path = Path(folder) / "customers.csv", Path(folder) / "customers.typed"
        write_csv(path, typed_path, rows, workspace_id)
        print(f"# {rows} rows, {path.stat().st_size / 1e6:.0f} MB of CSV", flush=True)
        floor, copied = copy_floor(url, path)
        assert copied == rows, copied
        table = table_floor(url, typed_path)
        print(f"# the finished rows straight into campaigns_customer: {table:.2f}s", flush=True)
        seconds, rss, out = measured_import(env, path)
        print(f"# first import: {out.strip()}", flush=True)
        if f"created: {rows}, updated: 0, skipped: 0, failed: 0" not in out:
            print(f"bench: import_1m_customers FAILED: {out.strip()}")
            return 1
        again, rss_again, out_again = measured_import(env, path)
        print(f"# second import: {out_again.strip()}", flush=True)
        if f"created: 0, updated: 0, skipped: {rows}, failed: 0" not in out_again:
            print(f"bench: import_1m_customers_again FAILED: {out_again.strip()}")
            return 1
    print(
        f"bench: import_1m_customers value={seconds:.2f}s baseline={floor:.2f}s "
        f"ratio={seconds / floor:.2f} goal=ratio<=3"
    )
    print(f"bench: import_1m_customers_peak_rss_mb value={max(rss, rss_again):.0f} goal=<300")
    print(
        f"bench: import_1m_customers_again value={again:.2f}s baseline={floor:.2f}s "
        f"ratio={again / floor:.2f} goal=info"
    )
    print(
        f"bench: import_1m_customers_table_floor value={table:.2f}s baseline={floor:.2f}s "
        f"ratio={table / floor:.2f} goal=info"
    )
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0


def measured_import(env: dict, path: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one import command, its RSS from wait4."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "import_customers", SLUG, str(path), "-v", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Read the pipes to their end, then reap the child with wait4 for its own rusage.
    out = process.stdout.read().decode()
    err = process.stderr.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"import failed ({process.returncode}): {err}")
    phases = [line.strip() for line in err.splitlines() if line.strip().startswith("time:")]
    print(f"# {phases[-1] if phases else ''} (of {elapsed:.2f}s in all)", flush=True)
    return elapsed, usage.ru_maxrss / 1024, out  # ru_maxrss is in KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
