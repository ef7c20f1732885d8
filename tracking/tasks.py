from celery import shared_task

from tracking.ingest import ingest_spool


@shared_task(name="tracking.ingest_events", ignore_result=True)
def ingest_events():
    """Move spooled click and open events into the database (celery beat runs it)."""
    report = ingest_spool()
    return {"files": report.files, "clicks": report.clicks, "opens": report.opens}


@shared_task(name="tracking.ensure_partitions", ignore_result=True)
def ensure_partitions_task():
    """Create the coming months' event partitions (PostgreSQL; celery beat, daily)."""
    from tracking.partitions import ensure_partitions

    return ensure_partitions()
