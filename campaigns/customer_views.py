"""Customer pages: the list and its export, a profile, edit and delete, and imports.
Thin: parsing and shaping only (campaigns/customer_selectors.py, customer_import.py).

Viewers read; analysts and owners edit, import and delete (workspace_view's write role).
The profile's timeline of deliveries, opens and clicks is a fragment served by the click
map (clickmap:customer-timeline), which owns the events: campaigns imports no tracking.
"""

import os

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header, urlencode

from campaigns import customer_selectors as selectors
from campaigns.customer_forms import (
    FIELD_CHOICES,
    TYPE_CHOICES,
    CustomerForm,
    CustomerSearchForm,
    ImportUploadForm,
    mapping_from_post,
)
from campaigns.customer_import import (
    ImportFileError,
    first_errors,
    import_preview,
    start_import,
    upload_import,
)
from campaigns.models import Customer, CustomerImport, Role
from campaigns.tasks import import_customers_task
from campaigns.tenancy import workspace_view

CUSTOMERS_PER_PAGE = 50


def _search(request):
    form = CustomerSearchForm(request.GET or None)
    q = form.cleaned_data["q"] if form.is_valid() else ""
    return form, q


@workspace_view
def customer_list(request):
    form, q = _search(request)
    page = Paginator(selectors.customer_search(q), CUSTOMERS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    columns = selectors.attribute_columns(request.workspace.pk)
    rows = [
        (c, [selectors.attribute_text((c.attributes or {}).get(n)) for n in columns])
        for c in page.object_list
    ]
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "columns": columns,
        "q": q,
        "query": urlencode({"q": q}) if q else "",
        "imports": CustomerImport.objects.select_related("created_by")[:5],
    }
    template = "campaigns/customers/list.html"
    if request.htmx and request.htmx.target == "customer-table":
        template = "campaigns/customers/partials/_table.html"
    return render(request, template, context)


@workspace_view
def customer_export(request):
    _, q = _search(request)
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(
        selectors.export_rows(selectors.customer_search(q)), content_type="text/csv"
    )
    response["Content-Disposition"] = content_disposition_header(
        True, f"customers-{request.workspace.slug}-{stamp}.csv"
    )
    return response


@workspace_view
def customer_detail(request, customer_id):
    customer = get_object_or_404(Customer, pk=customer_id)
    attributes = sorted(
        (k, selectors.attribute_text(v)) for k, v in (customer.attributes or {}).items()
    )
    return render(
        request,
        "campaigns/customers/detail.html",
        {
            "customer": customer,
            "attributes": attributes,
            "segments": selectors.customer_segments(customer),
        },
    )


@workspace_view(role=Role.ANALYST)
def customer_edit(request, customer_id):
    customer = get_object_or_404(Customer, pk=customer_id)
    form = CustomerForm(request.POST or None, instance=customer)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"{customer} saved.")
        return redirect("campaigns:customer", request.workspace.slug, customer.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "campaigns/customers/edit.html",
        {"customer": customer, "form": form},
        status=status,
    )


@workspace_view(role=Role.ANALYST)
def customer_delete(request, customer_id):
    """GET asks to confirm; POST erases the customer with every event and every number
    they counted in (the click map's rollups lose them too: clickmap.rollups.take_out)."""
    customer = get_object_or_404(Customer, pk=customer_id)
    if request.method == "POST":
        name = str(customer)
        customer.delete()
        messages.success(request, f"{name} and everything recorded about them are deleted.")
        return redirect("campaigns:customers", request.workspace.slug)
    return render(
        request,
        "campaigns/customers/delete.html",
        {"customer": customer, "deliveries": customer.deliveries.count()},
    )


@workspace_view(role=Role.ANALYST)
def import_upload(request):
    form = ImportUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            customer_import = upload_import(
                request.workspace, form.cleaned_data["file"], request.user
            )
        except ImportFileError as error:
            form.add_error("file", str(error))
        else:
            return redirect("campaigns:customer-import", request.workspace.slug, customer_import.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "campaigns/customers/import_upload.html", {"form": form}, status=status)


@workspace_view
def import_detail(request, import_id):
    """The mapping form while the upload waits for it (POST starts the import), then the
    progress and summary."""
    customer_import = get_object_or_404(CustomerImport, pk=import_id)
    problems = []
    if request.method == "POST" and customer_import.status != CustomerImport.Status.MAPPING:
        return redirect("campaigns:customer-import", request.workspace.slug, customer_import.pk)
    if request.method == "POST":
        key, columns, problems = mapping_from_post(request.POST, len(customer_import.columns))
        if not problems:
            try:
                start_import(customer_import, key=key, columns=columns)
            except ImportFileError as error:
                problems.append(str(error))
            else:
                import_customers_task.delay(customer_import.pk)
                return redirect(
                    "campaigns:customer-import", request.workspace.slug, customer_import.pk
                )
        customer_import.key = key
        customer_import.mapping = [c.as_dict() for c in columns]
    return render(
        request,
        "campaigns/customers/import_detail.html",
        {**_import_context(customer_import), "problems": problems},
        status=400 if problems else 200,
    )


def _import_context(customer_import):
    preview = import_preview(customer_import) if customer_import.status == "mapping" else []
    width = len(customer_import.columns)
    columns = [
        {
            "index": i,
            "header": header,
            "mapping": customer_import.mapping[i] if i < len(customer_import.mapping) else {},
            "samples": [row[i] for row in preview[:3] if i < len(row)],
        }
        for i, header in enumerate(customer_import.columns)
    ]
    errors, error_count = ([], 0)
    if customer_import.status == "done":
        errors, error_count = first_errors(customer_import.errors_path)
    return {
        "imp": customer_import,
        "errors": errors,
        "error_count": error_count,
        "columns": columns,
        "preview": [(row + [""] * width)[:width] for row in preview],
        "field_choices": FIELD_CHOICES,
        "type_choices": TYPE_CHOICES,
        "key_choices": CustomerImport.Key.choices,
        "has_errors": os.path.exists(customer_import.errors_path),
    }


@workspace_view
def import_progress(request, import_id):
    """The progress fragment (htmx polls it until the import is finished)."""
    customer_import = get_object_or_404(CustomerImport, pk=import_id)
    return render(
        request,
        "campaigns/customers/partials/_import_progress.html",
        _import_context(customer_import),
    )


@workspace_view
def import_errors(request, import_id):
    """The rows not imported, with line and reason, as CSV."""
    customer_import = get_object_or_404(CustomerImport, pk=import_id)
    try:
        handle = open(customer_import.errors_path, "rb")  # noqa: SIM115 (FileResponse closes it)
    except OSError:
        raise Http404("This import has no report.") from None
    stem = os.path.splitext(customer_import.file_name)[0] or "import"
    return FileResponse(
        handle, as_attachment=True, filename=f"{stem}.errors.csv", content_type="text/csv"
    )
