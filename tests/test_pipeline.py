"""The pipeline's scheduling (clickmap/pipeline.py): a run takes turns, a bounded turn of
ingestion then aggregation, so the map moves while the spool is still full; and at most
PIPELINE_RUNS runs hold a slot, the others returning at once."""

import pytest
from django.core.cache import cache
from django_scopes import scopes_disabled

from clickmap import pipeline
from tests.test_freshness import WriterFile, counted_clicks, shop  # noqa: F401 (fixture)
from tracking.models import ClickEvent, EventChange


@pytest.mark.django_db(transaction=True)
def test_a_run_aggregates_between_bounded_turns_of_ingestion(shop, spool_dir, settings):  # noqa: F811
    workspace, campaign, delivery, link = shop
    settings.PIPELINE_INGEST_SECONDS = 0  # one file a turn
    for age in (30, 20, 10):
        WriterFile(spool_dir, age, delivery, link).close()
    seen = []
    apply = pipeline.aggregate_shards

    def watching(deadline, report):
        # What the map counts each time aggregation's turn comes, against what is stored.
        applied = apply(deadline, report)
        with scopes_disabled():
            seen.append((ClickEvent.objects.count(), counted_clicks(workspace, campaign, link)))
        return applied

    pipeline.aggregate_shards = watching
    try:
        report = pipeline.run(slice_seconds=60)
    finally:
        pipeline.aggregate_shards = apply
    assert (report.files, report.clicks, report.work_left) == (3, 3, False)
    # Each file was counted before the next was ingested: the count moved in steps.
    assert seen[:3] == [(1, 1), (2, 2), (3, 3)]
    with scopes_disabled():
        assert not EventChange.objects.exists()


@pytest.mark.django_db
def test_at_most_pipeline_runs_runs_hold_a_slot(settings):
    settings.PIPELINE_RUNS = 2
    for number in range(3):
        cache.delete(pipeline.SLOT_KEY.format(number))
    first, second = pipeline.take_slot(), pipeline.take_slot()
    assert first and second and first != second
    assert pipeline.take_slot() is None
    assert pipeline.run_in_slot() is None  # returns at once: the holders do the work
    pipeline.free_slot(second)
    third = pipeline.take_slot()
    assert third is not None and third[0] == second[0]
    pipeline.free_slot(first)
    pipeline.free_slot(third)
    # A slot taken over after it expired is not freed by its former holder.
    taken = pipeline.take_slot()
    cache.set(taken[0], "someone else")
    pipeline.free_slot(taken)
    assert cache.get(taken[0]) == "someone else"
    cache.delete(taken[0])


def test_a_continuation_is_queued_once_until_it_starts():
    cache.delete(pipeline.CONTINUATION_KEY)
    assert pipeline.continuation_wanted()
    assert not pipeline.continuation_wanted()  # one is queued already
    pipeline.continuation_started()
    assert pipeline.continuation_wanted()
    pipeline.continuation_started()
