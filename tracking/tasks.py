from celery import shared_task

from tracking.ingest import ingest_spool


@shared_task(name="tracking.ingest_events", ignore_result=True)
def ingest_events():
    """Move spooled click and open events into the database (celery beat runs it)."""
    report = ingest_spool()
    return {"files": report.files, "clicks": report.clicks, "opens": report.opens}
