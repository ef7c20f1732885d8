from django.apps import AppConfig
from django.conf import settings


class ClickmapConfig(AppConfig):
    name = "clickmap"
    verbose_name = "Click map"

    def ready(self):
        from tracking.signals import events_stored

        events_stored.connect(_aggregate_inline, dispatch_uid="clickmap-aggregate-inline")


def _aggregate_inline(sender, **kwargs):
    # Embedded default: no worker runs the rollups, so apply them as events arrive.
    if settings.TRACKING_INGEST_INLINE:
        from clickmap.rollups import aggregate

        aggregate()
