from celery import shared_task

from clickmap.rollups import aggregate_free_shards


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
