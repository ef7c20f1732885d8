from django import template

from clickmap.freshness import of_numbers

register = template.Library()


@register.inclusion_tag("clickmap/partials/_freshness.html", takes_context=True)
def numbers_freshness(context):
    """The map's "Up to date" / "Numbers as of 12 s ago" line (clickmap/freshness.py):
    the view's, read before its numbers, or read now."""
    return {"freshness": context.get("freshness") or of_numbers()}
