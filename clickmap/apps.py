from django.apps import AppConfig
from django.conf import settings


class ClickmapConfig(AppConfig):
    name = "clickmap"
    verbose_name = "Click map"

    def ready(self):
        from django.db.models.signals import pre_delete

        from campaigns.models import Customer, Delivery
        from tracking.signals import events_stored

        events_stored.connect(_aggregate_inline, dispatch_uid="clickmap-aggregate-inline")
        for model in (Customer, Delivery):
            pre_delete.connect(_take_out, sender=model, dispatch_uid=f"clickmap-{model.__name__}")


def _aggregate_inline(sender, **kwargs):
    # Embedded default: no worker runs the rollups, so apply them as events arrive.
    if settings.TRACKING_INGEST_INLINE:
        from clickmap.pipeline import drain_everything

        drain_everything()  # and marks how fresh the rollups are


def _take_out(sender, instance, origin=None, **kwargs):
    # A customer's or delivery's events go with it (cascade): the rollups must lose them
    # too, while its deliveries still say which pairs and recipients they were. Only
    # when the deletion starts from customers or deliveries: a workspace's or campaign's
    # takes its rollups along. A queryset's rows are taken out together, at the first
    # one's signal (one aggregator run).
    if getattr(origin, "model", type(origin)) is not sender:
        return
    from campaigns.models import Customer
    from clickmap.rollups import take_out

    key = "customer_id__in" if sender is Customer else "pk__in"
    if origin is instance:
        take_out(**{key: [instance.pk]})
    elif not getattr(origin, "_taken_out", False):
        origin._taken_out = True
        take_out(**{key: list(origin.values_list("pk", flat=True))})
