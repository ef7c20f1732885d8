"""Per-customer rendering of a template version with sandboxed Jinja.

Links are tracked by their place in the template SOURCE (campaigns/inventory.py):
before Jinja runs, each trackable link's href is wrapped as
``{% filter cm_track(<TemplateLink id>) %}<href as written>{% endfilter %}``, so
after rendering every tracking URL names its inventory row, however loops and
conditions reshaped this customer's email.
"""

import html
from collections.abc import Callable
from functools import lru_cache

from jinja2 import ChainableUndefined, TemplateError, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import escape

from campaigns.htmlwarnings import TemplateWarning
from campaigns.inventory import rewrite_links

# Click URL maker for one delivery: (TemplateLink id, destination) -> tracking URL or None.
ClickUrl = Callable[[int, str], str | None]
_CLICK_URL = "_cm_click_url"


class PersonaliseError(ValueError):
    """The template cannot be rendered for this customer (syntax, sandbox, bad value)."""


@pass_context
def _cm_track(context, value, link_id):
    """Jinja filter: the rendered href → this delivery's tracking URL for the link."""
    destination = html.unescape(str(value)).strip()
    tracked = context[_CLICK_URL](link_id, destination)
    return escape(tracked if tracked is not None else destination)  # Markup, escaped


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, failing loudly on internals instead of printing nothing: a template
    that probes ``__class__`` and friends fails its delivery with a clear reason."""

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"access to {attribute!r} is not allowed in templates")


class SampleUndefined(ChainableUndefined):
    """A name a sample customer lacks: renders as nothing, and so does anything built on
    it (attributes, items, calls, arithmetic like ``{{Campaign-Name}}``, comparisons)."""

    def _same(self, *args, **kwargs):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _same
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = _same
    __call__ = _same

    def __lt__(self, other):
        return False

    __le__ = __gt__ = __ge__ = __lt__


def _environment(autoescape: bool, lenient: bool = False) -> ImmutableSandboxedEnvironment:
    options = {"undefined": SampleUndefined} if lenient else {}
    env = _StrictSandbox(autoescape=autoescape, keep_trailing_newline=True, **options)
    env.filters["cm_track"] = _cm_track
    return env


HTML_ENV = _environment(autoescape=True)
TEXT_ENV = _environment(autoescape=False)
# Previews for a sample customer: a name the customer lacks (and anything built on it)
# renders as nothing and loops over it run zero times, instead of failing the render.
LENIENT_HTML_ENV = _environment(autoescape=True, lenient=True)


def tracked_source(source: str, link_ids: dict[int, int]) -> str:
    """``source`` with every href whose source index is in ``link_ids`` wrapped in a
    ``cm_track`` filter block naming that TemplateLink id."""

    def wrap(source_index: int, raw: str) -> str:
        link_id = link_ids.get(source_index)
        if link_id is None:
            return raw
        return f"{{% filter cm_track({link_id}) %}}{raw}{{% endfilter %}}"

    return rewrite_links(source, wrap)


@lru_cache(maxsize=64)
def _compiled(source: str, autoescape: bool, lenient: bool = False):
    env = LENIENT_HTML_ENV if lenient else HTML_ENV if autoescape else TEXT_ENV
    try:
        return env.from_string(source)
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        where = f" on line {line}" if line else ""
        raise PersonaliseError(f"Template syntax error{where}: {error.message}") from error


def render(
    source: str,
    context: dict,
    click_url: ClickUrl | None = None,
    html_mode=True,
    *,
    lenient: bool = False,
) -> str:
    """Render a (tracked) source for one customer. Raises PersonaliseError, never leaks
    a sandbox escape: attribute access to internals is refused by the sandbox.
    ``lenient`` (HTML only): names missing from ``context`` render as nothing, as a
    sample customer's preview shows them, instead of failing where a send would."""
    template = _compiled(source, html_mode, lenient and html_mode)
    values = dict(context)
    values[_CLICK_URL] = click_url or (lambda link_id, url: None)
    try:
        return template.render(values)
    except SecurityError as error:
        raise PersonaliseError(
            f"The template uses something that is not allowed: {error}"
        ) from error
    except (TemplateError, TypeError, ValueError, ArithmeticError) as error:
        raise PersonaliseError(f"The template could not be rendered: {error}") from error


def render_subject(subject: str, context: dict) -> str:
    """The subject line for one customer, on one line (no header injection)."""
    text = render(subject, context, html_mode=False)
    return " ".join(text.split())


def customer_context(customer) -> dict:
    """What a template sees: ``customer`` (attributes, email, id) and each attribute."""
    data = dict(customer.attributes or {})
    return {
        **data,
        "customer": {
            **data,
            "email": customer.email,
            "id": customer.external_id,
            "external_id": customer.external_id,
        },
    }


def personalisation_warnings(source: str, sample_customer=None) -> list[TemplateWarning]:
    """What would make sending fail, said when the template is saved rather than once
    per delivery: a Jinja syntax error (with its line), or a failure to render for a
    sample customer of the workspace (or, without one, for a customer without
    attributes), e.g. ``{{Campaign-Name}}``: an undefined name minus another."""
    try:
        _compiled(source, True)
    except PersonaliseError as error:
        cause = error.__cause__
        return [
            TemplateWarning(
                getattr(cause, "lineno", None),
                "personalisation-syntax",
                f"the personalisation is not valid Jinja, so every send fails: "
                f"{getattr(cause, 'message', error)}",
            )
        ]
    context = customer_context(sample_customer) if sample_customer is not None else {}
    try:
        render(source, context)
    except PersonaliseError as error:
        who = (
            f"customer {sample_customer.email or sample_customer.external_id}"
            if sample_customer is not None
            else "a customer without attributes"
        )
        return [
            TemplateWarning(
                None,
                "personalisation-fails",
                f"the personalisation fails for {who}, so such sends fail: {error}",
            )
        ]
    return []
