"""Segment pages: the list, the builder (live count and sample over htmx), delete."""

from django.contrib import messages
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from campaigns import segment_builder
from campaigns.models import Campaign, Customer, Role, Segment
from campaigns.segments import (
    CONDITION_KINDS,
    OPERATOR_LABELS,
    SegmentRuleError,
    describe_rule,
    rule_q,
    segment_customers,
)
from campaigns.tenancy import workspace_view

SAMPLE_SIZE = 10
# Campaigns that have not finished sending: their audience must not vanish under them.
UNFINISHED = (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.SENDING)


def segment_members_preview(rule, segment: Segment | None = None) -> dict:
    """What the builder shows beside the rule being edited: the exact member count
    (the segment's explicit members included), a sample and the rule in words; or the
    errors that stop it from being evaluated."""
    try:
        who = rule_q(rule)
        if segment is not None and segment.pk:
            who |= Q(pk__in=segment.members.values("pk"))
        members = Customer.objects.filter(who)
        return {
            "count": members.count(),
            "sample": list(members.order_by("pk")[:SAMPLE_SIZE]),
            "described": describe_rule(rule),
        }
    except SegmentRuleError as error:
        return {"errors": [str(error)]}


def _context(request, segment, built):
    return {
        "segment": segment,
        "built": built,
        "name": request.POST.get("name", segment.name if segment else "").strip(),
        "kinds": [(k.name, k.label) for k in CONDITION_KINDS.values()],
        "operators": list(OPERATOR_LABELS.items()),
        "campaigns": list(Campaign.objects.order_by("-created_at").values_list("pk", "name")),
        "next_index": max((row.index for row in built.rows), default=-1) + 1,
        "preview": (
            segment_members_preview(built.rule, segment)
            if built.rule is not None
            else {"errors": built.errors}
        ),
    }


@workspace_view
def segment_list(request):
    rows = []
    for segment in Segment.objects.order_by("name"):
        try:
            described, count = describe_rule(segment.rule), segment_customers(segment).count()
        except SegmentRuleError as error:
            described, count = f"Cannot be evaluated: {error}", None
        rows.append((segment, described, count))
    return render(request, "campaigns/segment_list.html", {"rows": rows})


def _builder(request, segment):
    """GET: the builder for `segment` (None: a new one). POST: add or remove a row
    (re-shown, nothing saved), or save when every condition is valid."""
    if request.method == "GET":
        built = segment_builder.Built()
        if segment is not None:
            built.match, built.rows = segment_builder.rows_of_rule(segment.rule)
            built = segment_builder.build(_data_of(built))
        else:
            built.rows = [segment_builder.Row(index=0)]
            built.errors = ["Complete the condition."]
        return render(request, "campaigns/segment_form.html", _context(request, segment, built))
    action = request.POST.get("action", "save")
    drop = int(action[7:]) if action.startswith("remove-") and action[7:].isdigit() else None
    built = segment_builder.build(request.POST, drop=drop)
    if action == "add":
        built.rows.append(segment_builder.Row(index=_next_index(built)))
        return render(request, "campaigns/segment_form.html", _context(request, segment, built))
    if drop is not None:
        return render(request, "campaigns/segment_form.html", _context(request, segment, built))
    name = request.POST.get("name", "").strip()[:200]
    if not name:
        built.errors.insert(0, "Give the segment a name.")
    if built.errors:
        context = _context(request, segment, built)
        context["save_errors"] = built.errors
        return render(request, "campaigns/segment_form.html", context, status=400)
    if segment is None:
        segment = Segment.objects.create(workspace=request.workspace, name=name, rule=built.rule)
        messages.success(request, f"Segment “{name}” created.")
    else:
        segment.name, segment.rule = name, built.rule
        segment.save(update_fields=["name", "rule"])
        messages.success(request, f"Segment “{name}” saved.")
    return redirect(
        "campaigns:segment", workspace_slug=request.workspace.slug, segment_id=segment.pk
    )


def _next_index(built) -> int:
    return max((row.index for row in built.rows), default=-1) + 1


def _data_of(built) -> dict:
    """Builder form data of rows (to validate a saved rule as the builder would)."""
    data = {"match": built.match}
    for row in built.rows:
        prefix = f"c-{row.index}-"
        data.update(
            {
                prefix + "kind": row.kind,
                prefix + "attribute": row.attribute,
                prefix + "op": row.op,
                prefix + "value": row.value,
                prefix + "campaign": row.campaign,
                prefix + "days": row.days,
                prefix + "reliable": "1" if row.reliable else "",
                prefix + "negate": "1" if row.negate else "",
            }
        )
    return data


@workspace_view(role=Role.ANALYST)
def segment_create(request):
    return _builder(request, None)


@workspace_view(write_role=Role.ANALYST)
def segment_edit(request, segment_id):
    return _builder(request, get_object_or_404(Segment, pk=segment_id))


@workspace_view
def segment_preview(request):
    """The live count and sample of the rule in the builder (htmx, on every change)."""
    segment = None
    if request.GET.get("segment", "").isdigit():
        segment = get_object_or_404(Segment, pk=request.GET["segment"])
    built = segment_builder.build(request.GET)
    preview = segment_members_preview(built.rule, segment) if built.rule else None
    return render(
        request,
        "campaigns/partials/_segment_preview.html",
        {"preview": preview or {"errors": built.errors}},
    )


@workspace_view
def segment_condition(request):
    """One condition row, re-drawn for its kind when the kind changes (htmx)."""
    index = request.GET.get("index", "0")
    index = int(index) if index.isdigit() else 0
    _, rows = segment_builder.rows_from_data(request.GET)
    row = next((r for r in rows if r.index == index), segment_builder.Row(index=index))
    context = {
        "row": row,
        "kinds": [(k.name, k.label) for k in CONDITION_KINDS.values()],
        "operators": list(OPERATOR_LABELS.items()),
        "campaigns": list(Campaign.objects.order_by("-created_at").values_list("pk", "name")),
    }
    return render(request, "campaigns/partials/_segment_condition.html", context)


@workspace_view(role=Role.ANALYST)
@require_POST
def segment_delete(request, segment_id):
    segment = get_object_or_404(Segment, pk=segment_id)
    users = list(segment.campaigns.filter(status__in=UNFINISHED).values_list("name", flat=True))
    if users:
        messages.error(
            request,
            f"“{segment.name}” is the audience of {', '.join(users)}, not sent yet: "
            "choose another audience there first.",
        )
        return redirect(
            "campaigns:segment", workspace_slug=request.workspace.slug, segment_id=segment.pk
        )
    segment.delete()
    messages.success(request, f"Segment “{segment.name}” deleted.")
    return redirect("campaigns:segments", workspace_slug=request.workspace.slug)
