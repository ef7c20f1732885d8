"""Unsubscribing a customer through a delivery's signed link."""

from django.db import transaction
from django.utils import timezone
from django_scopes import scopes_disabled

from campaigns.models import Customer, Delivery
from tracking.models import Unsubscribe


def delivery_for(delivery_id: int) -> Delivery | None:
    with scopes_disabled():
        return (
            Delivery.objects.select_related("customer", "workspace").filter(pk=delivery_id).first()
        )


@transaction.atomic
def unsubscribe(delivery: Delivery, method: str) -> Unsubscribe:
    """Record the unsubscribe and stop future sends to the customer. Idempotent: a
    second call returns the first record and changes nothing."""
    with scopes_disabled():
        record, created = Unsubscribe.objects.get_or_create(
            delivery=delivery,
            defaults={
                "workspace_id": delivery.workspace_id,
                "customer_id": delivery.customer_id,
                "method": method,
                "at": timezone.now(),
            },
        )
        if created:
            Customer.objects.filter(pk=delivery.customer_id, unsubscribed_at__isnull=True).update(
                unsubscribed_at=record.at
            )
    return record
