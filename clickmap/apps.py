from django.apps import AppConfig
from django.conf import settings


class ClickmapConfig(AppConfig):
    name = "clickmap"
    verbose_name = "Click map"

    def ready(self):
        from django.db.models.signals import pre_delete

        from campaigns.models import Customer
        from tracking.signals import events_stored

        events_stored.connect(_aggregate_inline, dispatch_uid="clickmap-aggregate-inline")
        pre_delete.connect(_take_out_customer, sender=Customer, dispatch_uid="clickmap-customer")


def _aggregate_inline(sender, **kwargs):
    # Embedded default: no worker runs the rollups, so apply them as events arrive.
    if settings.TRACKING_INGEST_INLINE:
        from clickmap.rollups import aggregate

        aggregate()


def _take_out_customer(sender, instance, origin=None, **kwargs):
    # Its events go with it (cascade): the rollups must lose them too, while its
    # deliveries still say which pairs and recipients they were. Not when its workspace
    # is being deleted: every rollup of the workspace goes as well. A queryset's
    # customers are taken out together, at the first one's signal (one aggregator run).
    if getattr(origin, "model", type(origin)) is not sender:
        return
    from clickmap.rollups import take_out_customers

    if origin is instance:
        take_out_customers([instance.pk])
    elif not getattr(origin, "_taken_out", False):
        origin._taken_out = True
        take_out_customers(list(origin.values_list("pk", flat=True)))
