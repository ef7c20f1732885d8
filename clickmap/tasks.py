from celery import shared_task

from clickmap import pipeline
from clickmap.rollups import aggregate_free_shards


@shared_task(name="clickmap.pipeline", ignore_result=True)
def pipeline_task(continuation: bool = False):
    """Ingest and aggregate in turns (clickmap/pipeline.py; celery beat ticks every
    second). A run that ends its slice with work left queues its continuation at once:
    one at a time, never expiring."""
    if continuation:
        pipeline.continuation_started()
    report = pipeline.run_in_slot()
    if report is None:
        return None  # every slot is held by a run that loops while there is work
    if report.work_left and pipeline.continuation_wanted():
        pipeline_task.apply_async(kwargs={"continuation": True})
    return {  # clickmap/pipeline_log.py logs and counts it (celery_signals.py)
        "files": report.files,
        "clicks": report.clicks,
        "opens": report.opens,
        "changes": report.changes,
        "busy_shards": report.busy_shards,
        "ingest_s": round(report.ingest_seconds, 3),
        "aggregate_s": round(report.aggregate_seconds, 3),
        "work_left": report.work_left,
    }


@shared_task(name="clickmap.aggregate", ignore_result=True)
def aggregate_task():
    """Bring the rollups up to date (celery beat runs it every few seconds): every shard
    of the change log that no overlapping run holds."""
    report = aggregate_free_shards()
    return {"changes": report.changes, "pairs": report.pairs, "busy_shards": report.busy_shards}


@shared_task(name="clickmap.render_preview", ignore_result=True, soft_time_limit=300)
def render_preview_task(preview_id: int):
    """Render one stored preview in this worker's Chromium (idempotent)."""
    from clickmap.previews import render_stored_preview  # Playwright loads in workers only

    preview = render_stored_preview(preview_id)
    return preview.status if preview else None
