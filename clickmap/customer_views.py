"""The customer profile's timeline fragment (campaigns' profile page loads it with htmx:
the events are tracking's, which campaigns may not import)."""

from django.shortcuts import get_object_or_404, render

from campaigns.models import Customer
from campaigns.tenancy import workspace_view
from clickmap.customer_timeline import customer_timeline


@workspace_view
def customer_timeline_fragment(request, customer_id):
    customer = get_object_or_404(Customer.objects.select_related("workspace"), pk=customer_id)
    entries, more = customer_timeline(customer)
    return render(
        request,
        "clickmap/partials/_customer_timeline.html",
        {"customer": customer, "entries": entries, "more": more},
    )
