"""Per-customer rendering of a template version with sandboxed Jinja.

Links are tracked by their place in the template SOURCE (campaigns/inventory.py):
before Jinja runs, each trackable link's href is wrapped as
``{% filter cm_track(<TemplateLink id>) %}<href as written>{% endfilter %}``, so
after rendering every tracking URL names its inventory row, however loops and
conditions reshaped this customer's email. A personalised href (one with a
placeholder) must render to an http(s) address for the customer, or the render fails:
customer data never puts a ``javascript:`` link into an email.

Every render runs under a resource budget (campaigns/render_budget.py), and a source
nested deeper than ``MAX_NESTING`` is refused before Jinja parses it (its parser and
Python's compiler recurse once per level).
"""

import html
from collections.abc import Callable
from functools import lru_cache

from jinja2 import ChainableUndefined, TemplateError, nodes, pass_context
from jinja2.sandbox import SecurityError
from markupsafe import escape

from campaigns.htmlwarnings import TemplateWarning
from campaigns.inventory import TemplateInputError, rewrite_links
from campaigns.linkflags import has_placeholder, href_scheme
from campaigns.render_budget import (
    BudgetedSandbox,
    BudgetExceeded,
    RenderBudget,
    activate,
    deactivate,
)

# Click URL maker for one delivery: (TemplateLink id, destination) -> tracking URL or None.
ClickUrl = Callable[[int, str], str | None]
_CLICK_URL = "_cm_click_url"

# Brackets and block tags ({% if %}, {% for %}, {% macro %}…) nest at most this deep;
# real emails nest a handful. Jinja's parser takes ~15 Python frames per bracket.
MAX_NESTING = 24
# The parsed template (blocks, expressions, filter chains) is at most this deep: Jinja's
# code generator recurses per level, and Python compiles at most 100 indented levels.
MAX_TREE_DEPTH = 64
_OPENING_TAGS = frozenset(
    {"if", "for", "macro", "call", "filter", "block", "with", "autoescape", "set"}
)
_OPENING_BRACKETS = frozenset("([{")
_CLOSING_BRACKETS = frozenset(")]}")
_WEB_SCHEMES = frozenset({"http", "https"})


class PersonaliseError(ValueError):
    """The template cannot be rendered for this customer (syntax, sandbox, bad value,
    over its budget)."""


class TemplateTooDeep(PersonaliseError):
    """The source nests deeper than Jinja can safely parse: refused when saved."""


@pass_context
def _cm_track(context, value, link_id, personalised=False):
    """Jinja filter: the rendered href → this delivery's tracking URL for the link. A
    personalised href that renders to anything but an http(s) address fails the render
    (not a sample customer's preview, where a missing name renders as nothing)."""
    destination = html.unescape(str(value)).strip()
    sample = context.environment.undefined is SampleUndefined
    if personalised and not sample and (scheme := href_scheme(destination)) not in _WEB_SCHEMES:
        if not destination:
            what = "nothing"
        else:
            what = f"a {scheme}: address" if scheme else "an address without http(s)"
        raise PersonaliseError(
            f"A personalised link renders to {what} for this customer "
            f"({destination[:60]!r}); only http and https links are sent."
        )
    tracked = context[_CLICK_URL](link_id, destination)
    return escape(tracked if tracked is not None else destination)  # Markup, escaped


class _StrictSandbox(BudgetedSandbox):
    """The budgeted sandbox, failing loudly on internals instead of printing nothing: a
    template that probes ``__class__`` and friends fails its delivery with a clear reason."""

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


def _environment(autoescape: bool, lenient: bool = False) -> BudgetedSandbox:
    options = {"undefined": SampleUndefined} if lenient else {}
    env = _StrictSandbox(autoescape=autoescape, keep_trailing_newline=True, **options)
    env.add_filter("cm_track", _cm_track)
    return env


HTML_ENV = _environment(autoescape=True)
TEXT_ENV = _environment(autoescape=False)
# Previews for a sample customer: a name the customer lacks (and anything built on it)
# renders as nothing and loops over it run zero times, instead of failing the render.
LENIENT_HTML_ENV = _environment(autoescape=True, lenient=True)


def tracked_source(source: str, link_ids: dict[int, int]) -> str:
    """``source`` with every href whose source index is in ``link_ids`` wrapped in a
    ``cm_track`` filter block naming that TemplateLink id (and whether the href is
    personalised)."""

    def wrap(source_index: int, raw: str) -> str:
        link_id = link_ids.get(source_index)
        if link_id is None:
            return raw
        personalised = "true" if has_placeholder(raw) else "false"
        return f"{{% filter cm_track({link_id}, {personalised}) %}}{raw}{{% endfilter %}}"

    return rewrite_links(source, wrap)


def _nesting(env: BudgetedSandbox, source: str) -> int:
    """How deep brackets and block tags nest in ``source`` (the lexer, not the parser:
    it does not recurse). The ``cm_track`` blocks that sending adds do not count."""
    depth = deepest = 0
    opened: list[bool] = []  # per open block tag: whether it counts
    tag = None  # the statement being read: [name, first argument, saw "="]
    for _, kind, value in env.lex(source):
        if kind == "block_begin":
            tag = []
        elif tag is not None and kind == "name" and len(tag) < 2:
            tag.append(value)
        elif tag is not None and kind == "operator" and value == "=":
            tag.append("=")
        elif kind == "block_end" and tag:
            name = tag[0]
            if name in _OPENING_TAGS and not (name == "set" and "=" in tag):
                counts = not (name == "filter" and tag[1:2] == ["cm_track"])
                opened.append(counts)
                depth += counts
            elif name.startswith("end") and opened:
                depth -= opened.pop()
            tag = None
        elif kind == "operator" and value in _OPENING_BRACKETS:
            depth += 1
        elif kind == "operator" and value in _CLOSING_BRACKETS:
            depth -= 1
        deepest = max(deepest, depth)
    return deepest


def _tree_depth(tree: nodes.Node) -> int:
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def _too_deep(what: str, limit: int) -> TemplateTooDeep:
    return TemplateTooDeep(f"The personalisation nests {what} more than {limit} deep; simplify it.")


@lru_cache(maxsize=64)
def _compiled(source: str, autoescape: bool, lenient: bool = False):
    """The compiled template. Raises TemplateTooDeep for a source nested too deeply,
    PersonaliseError for invalid Jinja (with its line)."""
    env = LENIENT_HTML_ENV if lenient else HTML_ENV if autoescape else TEXT_ENV
    try:
        if _nesting(env, source) > MAX_NESTING:
            raise _too_deep("brackets and tags", MAX_NESTING)
        tree = env.parse(source)
        if _tree_depth(tree) > MAX_TREE_DEPTH:
            raise _too_deep("its expressions and tags", MAX_TREE_DEPTH)
        return env.from_string(tree)
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        where = f" on line {line}" if line else ""
        raise PersonaliseError(f"Template syntax error{where}: {error.message}") from error
    except RecursionError:
        raise _too_deep("its expressions", MAX_NESTING) from None
    except (SyntaxError, MemoryError, OverflowError) as error:
        # Python refuses what Jinja generated (e.g. more than 20 nested loops).
        raise PersonaliseError(
            f"The personalisation is too complex to run: {error.args[0] if error.args else error}"
        ) from None


# What a template's code can raise besides Jinja's own errors: all of it is a problem
# of this template for this customer. (Not BaseException, and not Exception either:
# a worker's "stop now", such as Celery's soft time limit, must pass through.)
_RENDER_ERRORS = (
    TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    RuntimeError,  # RecursionError included
    MemoryError,
    AssertionError,
)


def render(
    source: str,
    context: dict,
    click_url: ClickUrl | None = None,
    html_mode=True,
    *,
    lenient: bool = False,
    budget: RenderBudget | None = None,
) -> str:
    """Render a (tracked) source for one customer under ``budget`` (by default a fresh
    one from the PERSONALISE_* settings; pass one to share it between the parts of a
    delivery). Raises PersonaliseError, never leaks a sandbox escape (attribute access
    to internals is refused) and never runs past the budget: the message then names
    the limit. ``lenient`` (HTML only): names missing from ``context`` render as
    nothing, as a sample customer's preview shows them, instead of failing where a send
    would."""
    template = _compiled(source, html_mode, lenient and html_mode)
    budget = budget or RenderBudget()
    values = dict(context)
    values[_CLICK_URL] = click_url or (lambda link_id, url: None)
    token = activate(budget)
    try:
        pieces = []
        # Template.generate without its traceback rewriting: the messages name the problem.
        for piece in template.root_render_func(template.new_context(values)):
            budget.write(len(piece))
            pieces.append(piece)
        return "".join(pieces)
    except PersonaliseError:
        raise
    except BudgetExceeded as error:
        raise PersonaliseError(str(error)) from error
    except SecurityError as error:
        raise PersonaliseError(
            f"The template uses something that is not allowed: {error}"
        ) from error
    except RecursionError as error:
        raise PersonaliseError(str(budget.too_deep(python=True))) from error
    except MemoryError as error:
        raise PersonaliseError(str(budget.too_large())) from error
    except _RENDER_ERRORS as error:
        raise PersonaliseError(
            f"The template could not be rendered: {type(error).__name__}: {error}"
        ) from error
    finally:
        deactivate(token)


def check_template(source: str, html_mode=True) -> None:
    """Raise PersonaliseError (TemplateTooDeep when nested too deeply) when ``source``
    is not a template that could ever render; nothing is rendered."""
    _compiled(source, html_mode)


def render_subject(subject: str, context: dict, *, budget: RenderBudget | None = None) -> str:
    """The subject line for one customer, on one line (no header injection)."""
    text = render(subject, context, html_mode=False, budget=budget)
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
    attributes), e.g. ``{{Campaign-Name}}``: an undefined name minus another, or a
    render over its budget. Raises TemplateInputError for a source nested too deeply
    for Jinja to parse, which is refused rather than saved."""
    try:
        _compiled(source, True)
    except TemplateTooDeep as error:
        raise TemplateInputError(str(error)) from error
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
