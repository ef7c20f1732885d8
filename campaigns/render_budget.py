"""The resource budget of one personalisation render, and the sandbox that keeps to it.

A template is tenant input and a render runs in a Celery worker or a web thread, so
no render may hold either for long: every render (send, preview, "Preview for", the
save-time check) runs under a ``RenderBudget`` of loop iterations, characters written,
nested calls and wall time (``RenderLimits``, from the PERSONALISE_* settings). Over
budget, ``BudgetExceeded`` names the limit (campaigns.personalise.render raises it as a
PersonaliseError with the same message); the caller fails that one delivery or preview.

How each limit is kept, without signals (renders also run in web threads):

- **Loop iterations**: the code generator wraps every ``{% for %}``'s iterable, and
  the sandbox every recursive ``loop(…)`` call, in a counter; nested loops count
  every inner iteration, so ``range(50000)`` around ``range(12000)`` stops at the
  limit, not after 600 million steps. ``slice(n)`` counts its n slices too.
- **Output**: the caller counts what ``generate()`` yields, and text written into the
  buffer of a macro or a ``{% set %}``/``{% filter %}`` block counts as it is written
  (so a macro's text counts again where it is printed); ``~`` and the joins of buffers
  are measured before they allocate. Operations that could build one huge value from small inputs
  (``'x' * n``, ``**``, ``%``/``format`` widths, ``center``, ``replace``, ``join``,
  ``indent``, ``batch`` fill, ``tojson`` indent, lists nested in lists…) are refused
  beforehand when their result would exceed the output limit, and every value that
  is printed or stringified is measured first.
- **Depth**: every call from the template (macros, ``caller()``, recursive loops,
  blocks) counts one level while it runs.
- **Wall time**: the deadline is checked at each counted step (iteration, call,
  filter, operator, join, output piece).

The state of the render in progress lives in a context variable, so concurrent
renders in threads never share a budget.
"""

import re
import string
import time
import types
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, generate_lorem_ipsum

# An integer a template computes may have at most this many bits (about 30,000 digits):
# ``9 ** 9 ** 9`` would otherwise hold a worker for minutes in one multiplication.
MAX_INT_BITS = 100_000


@dataclass(frozen=True)
class RenderLimits:
    """What one render may spend (the PERSONALISE_* settings)."""

    loop_iterations: int = 100_000
    output_chars: int = 2_000_000
    depth: int = 50
    seconds: float = 2.0

    @classmethod
    def from_settings(cls) -> "RenderLimits":
        return cls(
            loop_iterations=settings.PERSONALISE_MAX_LOOP_ITERATIONS,
            output_chars=settings.PERSONALISE_MAX_OUTPUT_CHARS,
            depth=settings.PERSONALISE_MAX_DEPTH,
            seconds=settings.PERSONALISE_MAX_SECONDS,
        )


class BudgetExceeded(Exception):
    """A render went over one of its limits; ``limit`` names which ("loop iterations",
    "output", "depth", "time"). campaigns.personalise turns it into a PersonaliseError
    with the same message."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


class RenderBudget:
    """What one render (or the renders of one delivery) has spent so far."""

    def __init__(self, limits: RenderLimits | None = None):
        self.limits = limits or RenderLimits.from_settings()
        self.iterations = 0
        self.written = 0
        self.depth = 0
        self.deadline = time.monotonic() + self.limits.seconds

    def iterate(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > self.limits.loop_iterations:
            raise BudgetExceeded(
                "loop iterations",
                f"The personalisation went over its budget of "
                f"{self.limits.loop_iterations:,} loop iterations "
                "(PERSONALISE_MAX_LOOP_ITERATIONS).",
            )
        self.tick()

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(
                "time",
                f"The personalisation went over its budget of {self.limits.seconds:g} "
                "seconds (PERSONALISE_MAX_SECONDS).",
            )

    def write(self, chars: int) -> None:
        """Count ``chars`` characters of output."""
        self.written += chars
        if self.written > self.limits.output_chars:
            raise self.too_large()
        self.tick()

    def allow(self, chars: int) -> None:
        """Refuse to build one value of ``chars`` characters when it is over the limit."""
        if chars > self.limits.output_chars:
            raise self.too_large()

    def too_large(self) -> BudgetExceeded:
        return BudgetExceeded(
            "output",
            f"The personalisation went over its budget of {self.limits.output_chars:,} "
            "characters of output (PERSONALISE_MAX_OUTPUT_CHARS).",
        )

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.depth:
            raise self.too_deep()
        self.tick()

    def too_deep(self, python=False) -> BudgetExceeded:
        """The depth limit, or (``python``) Python's own recursion limit, came first."""
        if python:
            return BudgetExceeded(
                "depth",
                "The personalisation nests calls deeper than Python allows (RecursionError), "
                "e.g. a macro that calls itself; PERSONALISE_MAX_DEPTH should stop it sooner.",
            )
        return BudgetExceeded(
            "depth",
            f"The personalisation went over its budget of {self.limits.depth} nested calls "
            "(PERSONALISE_MAX_DEPTH), e.g. a macro that calls itself.",
        )


_ACTIVE: ContextVar[RenderBudget | None] = ContextVar("clickmap_render_budget", default=None)


def activate(budget: RenderBudget):
    """Make ``budget`` the one the sandbox charges in this thread; returns the token
    for ``deactivate``."""
    return _ACTIVE.set(budget)


def deactivate(token) -> None:
    _ACTIVE.reset(token)


def _budget() -> RenderBudget:
    budget = _ACTIVE.get()
    if budget is None:  # e.g. constant folding at compile time: evaluate at render time
        raise SecurityError("templates run only under a render budget")
    return budget


def text_size(value, limit: int) -> tuple[int, int]:
    """(An estimate of ``len(str(value))``, nesting depth), the size stopping at
    ``limit + 1``. Containers count their items as often as they are reached, so a
    list holding itself ten times ten levels deep counts 10**10, not 10."""
    total, deepest = 0, 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + (2 if depth else 0)
        elif isinstance(item, Undefined):
            pass
        elif isinstance(item, bool | float | types.NoneType):
            total += 24
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend((part, depth + 1) for part in item)
        elif isinstance(item, Namespace):
            stack.append((item._Namespace__attrs, depth + 1))  # its repr prints them
        else:
            total += 64  # a macro, loop, cycler…: a short fixed repr
        if total > limit:
            return limit + 1, deepest
    return total, deepest


def _size(budget: RenderBudget, value) -> int:
    """``text_size`` of value, refused when over the output limit."""
    if isinstance(value, str):  # most values: no walk
        size = len(value)
    elif value is None or isinstance(value, bool | float):
        return 24
    elif type(value) is int:
        size = value.bit_length() // 3 + 2
    else:
        size, _ = text_size(value, budget.limits.output_chars)
    budget.allow(size)
    return size


# --- operators -------------------------------------------------------------------------

_PERCENT = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])", re.DOTALL
)
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?\Z", re.S)


def _int_bits(value) -> int:
    return value.bit_length() if isinstance(value, int) and not isinstance(value, bool) else 0


@lru_cache(maxsize=256)  # format strings are mostly literals of the template
def _conversions(template: str) -> list[tuple[str, str, str]]:
    return _PERCENT.findall(template)


def _check_percent(budget: RenderBudget, template, args) -> None:
    """``template % args``: widths and precisions, and each conversion repeating the
    largest argument, must fit the output limit."""
    conversions = _conversions(str(template))
    widths = 0
    for width, precision, _ in conversions:
        for number in (width, precision):
            if number == "*":
                values = args if isinstance(args, tuple) else (args,)
                widths += sum(v for v in values if isinstance(v, int) and v > 0)
            elif number:
                if len(number) > 9:
                    raise budget.too_large()
                widths += int(number)
    budget.allow(widths)
    size = _size(budget, args)
    budget.allow(len(template) + widths + len(conversions) * size)


def _check_format(budget: RenderBudget, template: str, args, kwargs) -> None:
    """``template.format(*args, **kwargs)``, the same way as ``_check_percent``."""
    fields, widths = 0, 0
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise SecurityError("nested replacement fields in a format spec are not allowed")
        match = _FORMAT_SPEC.match(spec or "")
        for number in match.groups() if match else ():
            if number:
                if len(number) > 9:
                    raise budget.too_large()
                widths += int(number)
    budget.allow(widths)
    size = _size(budget, (args, kwargs))
    budget.allow(len(template) + widths + fields * size)


def _binop(budget: RenderBudget, operator: str, left, right) -> None:
    """Refuse an operator whose result would be over the budget, before computing it."""
    if operator == "*":
        if isinstance(right, str | bytes | list | tuple):
            left, right = right, left
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, int):
            if right > 0:
                budget.allow(_size(budget, left) * right)
        elif _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise budget.too_large()
    elif operator == "**":
        if isinstance(right, int) and right * _int_bits(left) > MAX_INT_BITS:
            raise budget.too_large()
    elif operator == "%" and isinstance(left, str | bytes):
        _check_percent(budget, left, right)
    elif operator == "+" and isinstance(left, str | bytes | list | tuple):
        budget.allow(_size(budget, left) + _size(budget, right))


# --- method calls and filters ----------------------------------------------------------


def _arg(args, kwargs, index: int, name: str, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _replaced(text, old, new, count) -> int:
    """An upper bound of ``len(text.replace(old, new, count))``, HTML escaping included."""
    text, old, new = str(text), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return 6 * (len(text) + times * len(new))  # escaping makes a character at most 6


def _joined(budget: RenderBudget, items: list, separator) -> int:
    return sum(_size(budget, item) for item in items) + len(items) * len(str(separator))


def _lines(text) -> int:
    return str(text).count("\n") + 1


def _url_words(text) -> int:
    return len(re.findall(r"\S*[.@:]\S*", str(text)))


def _formatted(budget: RenderBudget, value, args) -> int:
    """``value|format(*args)`` is ``str(value) % args``."""
    _size(budget, value)
    _check_percent(budget, str(value), args)
    return 0


# filter name -> (budget, value, args, kwargs) -> upper bound of the result's size.
# Filters that turn their value into text measure it first (``_size``); the rest of
# the builtins keep to the size of their input.
_FILTER_BOUNDS = {
    "center": lambda b, v, a, k: max(_size(b, v), _int_arg(b, _arg(a, k, 0, "width", 80))),
    "indent": lambda b, v, a, k: _size(b, v) + _lines(v) * _width(b, _arg(a, k, 0, "width", 4)),
    "wordwrap": lambda b, v, a, k: (
        _size(b, v) * (1 + len(str(_arg(a, k, 2, "wrapstring", "\n") or "\n")))
    ),
    "replace": lambda b, v, a, k: (
        _size(b, v)
        + _replaced(v, _arg(a, k, 0, "old", ""), _arg(a, k, 1, "new", ""), _arg(a, k, 2, "count"))
    ),
    "format": lambda b, v, a, k: _formatted(b, v, k or a),
    "urlize": lambda b, v, a, k: (
        3 * _size(b, v)
        + _url_words(v)
        * (
            60
            + len(str(_arg(a, k, 2, "target", "") or ""))
            + len(str(_arg(a, k, 3, "rel", "") or ""))
        )
    ),
    "tojson": lambda b, v, a, k: _nested(b, v, _arg(a, k, 0, "indent") or 0),
    "pprint": lambda b, v, a, k: _nested(b, v, 1),
    "xmlattr": lambda b, v, a, k: 6 * _size(b, v),
    "batch": lambda b, v, a, k: (
        _int_arg(b, _arg(a, k, 0, "linecount", 0)) * (_size(b, _arg(a, k, 1, "fill_with")) + 2)
        if _arg(a, k, 1, "fill_with") is not None
        else 0
    ),
}
_STRINGIFYING = {
    "string",
    "e",
    "escape",
    "forceescape",
    "safe",
    "lower",
    "upper",
    "title",
    "capitalize",
    "trim",
    "striptags",
    "truncate",
    "wordcount",
    "urlencode",
}


def _int_arg(budget: RenderBudget, value) -> int:
    if isinstance(value, int) and value > budget.limits.output_chars:
        raise budget.too_large()
    return value if isinstance(value, int) else 0


def _width(budget: RenderBudget, value) -> int:
    return len(value) if isinstance(value, str) else _int_arg(budget, value)


def _nested(budget: RenderBudget, value, indent) -> int:
    size, depth = text_size(value, budget.limits.output_chars)
    budget.allow(size)
    return size * (2 + _width(budget, indent) * (depth + 1))


_STR_METHOD_BOUNDS = {
    "center": lambda b, s, a, k: max(len(s), _int_arg(b, _arg(a, k, 0, "width", 0))),
    "ljust": lambda b, s, a, k: max(len(s), _int_arg(b, _arg(a, k, 0, "width", 0))),
    "rjust": lambda b, s, a, k: max(len(s), _int_arg(b, _arg(a, k, 0, "width", 0))),
    "zfill": lambda b, s, a, k: max(len(s), _int_arg(b, _arg(a, k, 0, "width", 0))),
    "expandtabs": lambda b, s, a, k: (
        len(s)
        + s.count("\t" if isinstance(s, str) else b"\t") * _int_arg(b, _arg(a, k, 0, "tabsize", 8))
    ),
    "replace": lambda b, s, a, k: _replaced(
        s, _arg(a, k, 0, "old", ""), _arg(a, k, 1, "new", ""), _arg(a, k, 2, "count", -1)
    ),
    "translate": lambda b, s, a, k: len(s) * _longest_value(b, _arg(a, k, 0, "table", {})),
}


def _longest_value(budget: RenderBudget, table) -> int:
    if isinstance(table, dict):
        return max([1, *(_size(budget, v) for v in table.values())])
    return 1


def _materialise(budget: RenderBudget, iterable) -> list:
    """A join's items as a list (a generator can be measured only once). Whatever a
    template iterates is finite: ranges are capped, filters map finite inputs."""
    items = list(iterable)
    budget.tick()
    return items


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, charging every render to the active ``RenderBudget``.

    Nothing is evaluated at compile time (``optimized=False``, a context-bound
    ``finalize`` and context-bound filters), so no template can make compiling run
    its loops or build its values outside a budget.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options):
        super().__init__(optimized=False, finalize=_finalize, **options)
        self.code_generator_class = _BudgetedCodeGenerator
        self.concat = _concat
        self.globals["lipsum"] = _lipsum
        self.filters = {name: _guarded(name, f) for name, f in self.filters.items()}

    def add_filter(self, name: str, func) -> None:
        self.filters[name] = _guarded(name, func)

    def call(__self, __context, __obj, *args, **kwargs):  # Jinja's signature
        budget = _budget()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (_Counted(args[0], budget), *args[1:])
        elif isinstance(__obj, types.BuiltinMethodType | types.MethodType):
            args = __self._bounded_method(budget, __obj, args, kwargs)
        budget.enter()
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        except RecursionError:
            raise budget.too_deep(python=True) from None
        finally:
            budget.depth -= 1
        _size(budget, result)
        return result

    @staticmethod
    def _bounded_method(budget: RenderBudget, method, args, kwargs) -> tuple:
        owner, name = getattr(method, "__self__", None), method.__name__
        if isinstance(owner, str | bytes | bytearray):
            if name == "join" and args:
                items = _materialise(budget, args[0])
                budget.allow(_joined(budget, items, owner))
                return (items, *args[1:])
            bound = _STR_METHOD_BOUNDS.get(name)
            if bound is not None:
                budget.allow(bound(budget, owner, args, kwargs))
        elif isinstance(owner, int) and name == "to_bytes":
            _int_arg(budget, _arg(args, kwargs, 0, "length", 1))
        return args

    def call_binop(self, context, operator, left, right):
        budget = _budget()
        _binop(budget, operator, left, right)
        result = self.binop_table[operator](left, right)
        budget.tick()
        return result

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args, **kwargs):
            budget = _budget()
            if is_map:
                _check_format(budget, template, (), args[0] if args else {})
            else:
                _check_format(budget, template, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

    def cm_count(self, iterable):
        """A ``{% for %}``'s iterable, charging each item to the budget."""
        return _Counted(iterable, _budget())

    def cm_buffer(self):
        """The buffer of a macro, ``{% set %}`` or ``{% filter %}`` block: what is
        written into it counts as output as it is written."""
        return _CountedBuffer(_budget())

    def cm_concat(self, join, values):
        """``a ~ b ~ c``: refused when the joined text would be over the budget."""
        budget = _budget()
        budget.tick()
        budget.allow(sum(_size(budget, value) for value in values))
        return join(values)


class _Counted:
    """An iterable whose iteration charges one loop iteration per item."""

    __slots__ = ("_iterable", "_budget")

    def __init__(self, iterable, budget: RenderBudget):
        self._iterable, self._budget = iterable, budget

    def __iter__(self):
        budget = self._budget
        for item in self._iterable:
            budget.iterate()
            yield item

    def __len__(self):  # LoopContext's loop.length, without consuming the items
        return len(self._iterable)


class _CountedBuffer(list):
    """A list of written text that charges every piece to the budget's output."""

    __slots__ = ("_budget",)

    def __init__(self, budget: RenderBudget):
        super().__init__()
        self._budget = budget

    def append(self, piece) -> None:
        self._budget.write(len(piece))
        super().append(piece)

    def extend(self, pieces) -> None:
        pieces = tuple(pieces)
        self._budget.write(sum(len(piece) for piece in pieces))
        super().extend(pieces)


def _guarded(name: str, func):
    """Filter ``func`` charged to the budget: its result, and beforehand what the
    filter would build, must fit the output limit."""
    bound = _FILTER_BOUNDS.get(name)
    stringifies = name in _STRINGIFYING
    # What the filter takes first, as Jinja passes it (Context.call, without its lookups).
    first = {
        "context": lambda context: context,
        "eval_context": lambda context: context.eval_ctx,
        "environment": lambda context: context.environment,
    }.get(getattr(getattr(func, "jinja_pass_arg", None), "name", None))

    @pass_context
    def guarded(context, value, *args, **kwargs):
        budget = _budget()
        budget.tick()
        if name == "join":
            value = _materialise(budget, value)
            budget.allow(_joined(budget, value, _arg(args, kwargs, 0, "d", "")))
        elif name == "slice":
            budget.iterate(max(0, _int_arg(budget, _arg(args, kwargs, 0, "slices", 0))))
        elif name == "sum":
            value = _materialise(budget, value)
            start = _arg(args, kwargs, 1, "start", 0)
            total = _size(budget, value) + _size(budget, start)
            # Summing lists copies the running total once per item.
            budget.allow(total * len(value) if isinstance(start, list | tuple) else total)
        elif bound is not None:
            budget.allow(bound(budget, value, args, kwargs))
        elif stringifies:
            _size(budget, value)
        if first is None:
            result = func(value, *args, **kwargs)
        else:
            result = func(first(context), value, *args, **kwargs)
        _size(budget, result)
        return result

    guarded.__name__ = getattr(func, "__name__", name)
    return guarded


@pass_context
def _finalize(context, value):
    """Every ``{{ … }}`` is measured before it is turned into text."""
    _size(_budget(), value)
    return value


def _concat(pieces) -> str:
    """Joining a block's or macro's buffer: refused before the join allocates when the
    text would be over the budget."""
    budget = _budget()
    pieces = pieces if isinstance(pieces, list) else list(pieces)
    budget.allow(sum(len(piece) for piece in pieces))
    return "".join(pieces)


def _lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 (Jinja's parameter names)
    budget = _budget()
    budget.allow(_int_arg(budget, n) * _int_arg(budget, max) * 12)
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


class _BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop's iterable counted and every ``~``
    measured before it joins."""

    def visit_For(self, node, frame):
        if not _is_counted(node.iter):
            count = nodes.EnvironmentAttribute("cm_count", lineno=node.iter.lineno)
            node.iter = nodes.Call(count, [node.iter], [], None, None, lineno=node.iter.lineno)
        super().visit_For(node, frame)

    def buffer(self, frame):  # as Jinja's, with a buffer that counts what is written
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.cm_buffer()")

    def visit_Concat(self, node, frame):  # as Jinja's, through environment.cm_concat
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.cm_concat({join}, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


def _is_counted(node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.EnvironmentAttribute)
        and node.node.name == "cm_count"
    )
