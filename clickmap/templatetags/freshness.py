from django import template

from clickmap.freshness import of_numbers

register = template.Library()


@register.inclusion_tag("clickmap/partials/_freshness.html")
def numbers_freshness():
    """The map's "Up to date" / "Numbers as of 12 s ago" line (clickmap/freshness.py)."""
    return {"freshness": of_numbers()}
