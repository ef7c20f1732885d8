from celery import shared_task

from clickmap.rollups import aggregate


@shared_task(name="clickmap.aggregate", ignore_result=True)
def aggregate_task():
    """Bring the rollups up to date (celery beat runs it every few seconds)."""
    report = aggregate()
    return {"changes": report.changes, "pairs": report.pairs}
