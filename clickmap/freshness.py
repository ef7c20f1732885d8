"""How fresh the click map's numbers are, from the pipeline's own marks
(clickmap/pipeline.py): every event spooled before `as_of` counts in the rollups. The
oldest current shard's mark, so it holds for every campaign."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from clickmap.models import ShardMark
from tracking.models import EventChange
from tracking.spool import file_times

# A healthy idle pipeline trails by a spool file's rotation (1 s) and a beat tick (1 s).
UP_TO_DATE_SECONDS = 5


@dataclass(frozen=True)
class Freshness:
    as_of: datetime | None  # None: no run has brought every shard up to date yet
    now: datetime

    @property
    def lag_seconds(self) -> int | None:
        if self.as_of is None:
            return None
        return max(0, int((self.now - self.as_of).total_seconds()))

    @property
    def up_to_date(self) -> bool:
        return self.as_of is not None and self.lag_seconds <= UP_TO_DATE_SECONDS

    @property
    def text(self) -> str:
        if self.as_of is None:
            return "Freshness unknown: the pipeline has not brought the numbers up to date yet"
        if self.up_to_date:
            return "Up to date"
        return f"Numbers as of {ago(self.lag_seconds)} ago"


def ago(seconds: int) -> str:
    """12 s, 4 min, 3 h, 2 days: whole units, rounded down (never fresher than true)."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    days = seconds // 86400
    return f"{days} day{'s' if days > 1 else ''}"


def of_numbers(now: datetime | None = None) -> Freshness:
    """The rollups' freshness now: the oldest mark of the current AGGREGATE_SHARDS
    shards (None while one of them has none).

    On the embedded default (TRACKING_INGEST_INLINE) no beat moves the marks while no
    click arrives: an idle dashboard would read "as of 10 min ago" with nothing left to
    count. There this process's spool is the only one, so an empty spool and an empty
    change log mean every event is counted: the numbers are as of now."""
    now = now or timezone.now()
    if settings.TRACKING_INGEST_INLINE and _nothing_pending():
        return Freshness(as_of=now, now=now)
    shards = settings.AGGREGATE_SHARDS
    marks = list(ShardMark.objects.filter(of=shards).values_list("at", flat=True))
    as_of = min(marks) if len(marks) == shards else None
    return Freshness(as_of=as_of, now=now)


def _nothing_pending() -> bool:
    """No spool file (open or complete) waits to be stored, and no stored event waits
    in the change log to be counted."""
    # The spool first: an event is spooled, then stored (moving it to the log), then
    # counted, so a spool seen empty before an empty log cannot hide one in between.
    if file_times(settings.TRACKING_SPOOL_DIR):
        return False
    return not EventChange.objects.exists()
