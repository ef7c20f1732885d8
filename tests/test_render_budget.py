"""Every personalisation render runs under a budget of loop iterations, output, nested
calls and wall time: a template that would hold a worker for minutes (or build a value of
gigabytes) stops at once with a reason naming the limit; ordinary templates render as
before."""

import time
import tracemalloc

import pytest
from django_scopes import scope, scopes_disabled

from campaigns.models import Delivery, Variant
from campaigns.personalise import PersonaliseError, check_template, render
from campaigns.render_budget import RenderBudget, RenderLimits
from clickmap.models import Preview
from tests.factories import customers, sendable_campaign

NESTED_LOOPS = (
    "{% for a in range(50000) %}{% for b in range(12000) %}{{ tick() }}{% endfor %}{% endfor %}"
)
THREE_NESTED = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
    "{{ tick() }}{% endfor %}{% endfor %}{% endfor %}"
)
LOOPS = "loop iterations (PERSONALISE_MAX_LOOP_ITERATIONS)"
OUTPUT = "characters of output (PERSONALISE_MAX_OUTPUT_CHARS)"
DEPTH = "nested calls (PERSONALISE_MAX_DEPTH)"
TIME = "seconds (PERSONALISE_MAX_SECONDS)"


@pytest.fixture(autouse=True)
def _time_is_not_the_limit_under_test(settings):
    # The machine is shared: only test_wall_time… is about seconds.
    settings.PERSONALISE_MAX_SECONDS = 120.0


class Ticks:
    """A template-callable counter: how often the template's innermost body ran."""

    def __init__(self, sleep=0.0):
        self.count, self.sleep = 0, sleep

    def __call__(self):
        self.count += 1
        if self.sleep:
            time.sleep(self.sleep)
        return ""


def failure(source, context=None, **kwargs) -> str:
    with pytest.raises(PersonaliseError) as raised:
        render(source, context or {}, **kwargs)
    return str(raised.value)


@pytest.mark.parametrize(
    "source, body_runs",
    [
        # Every iteration of every loop counts, outer ones too. 100,000 steps: the outer
        # loop's k-th step is step 1 + (k - 1) * 12,001, so 9 outer steps fit, and the
        # body ran 100,000 - 9 times (not 6·10^8).
        (NESTED_LOOPS, 100_000 - 9),
        # One outer and one middle step, then the innermost loop (not 10^15 times).
        (THREE_NESTED, 100_000 - 2),
    ],
    ids=["2 nested", "3 nested"],
)
def test_nested_loops_stop_at_the_iteration_budget_not_after_their_product(source, body_runs):
    ticks = Ticks()
    assert "100,000 " + LOOPS in failure(source, {"tick": ticks})
    assert ticks.count == body_runs


def test_the_iteration_budget_is_a_setting(settings):
    settings.PERSONALISE_MAX_LOOP_ITERATIONS = 1000
    ticks = Ticks()
    assert "1,000 loop iterations" in failure(NESTED_LOOPS, {"tick": ticks})
    assert ticks.count == 1000 - 1  # the outer loop's first iteration, then 999 inner


def test_loops_over_customer_data_and_strings_are_counted_too(settings):
    settings.PERSONALISE_MAX_LOOP_ITERATIONS = 10_000
    products = [{"n": i} for i in range(100)]
    source = (
        "{% for a in p %}{% for b in p %}{% for c in p %}{{ tick() }}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    ticks = Ticks()
    assert LOOPS in failure(source, {"p": products, "tick": ticks})
    assert ticks.count < 10_000
    ticks = Ticks()
    source = "{% for c in s %}{% for d in s %}{{ tick() }}{% endfor %}{% endfor %}"
    assert LOOPS in failure(source, {"s": "x" * 1000, "tick": ticks})
    assert ticks.count < 10_000


def test_a_recursive_loop_counts_every_level(settings):
    settings.PERSONALISE_MAX_LOOP_ITERATIONS = 5_000
    # Each level iterates 1,000 items and recurses on the first: 1,000 per level.
    source = (
        "{% for x in items recursive %}{{ tick() }}"
        "{% if loop.first and loop.depth < 20 %}{{ loop(items) }}{% endif %}{% endfor %}"
    )
    ticks = Ticks()
    assert LOOPS in failure(source, {"items": list(range(1000)), "tick": ticks})
    assert ticks.count <= 5_000


def test_output_stops_as_soon_as_it_passes_the_budget(settings):
    settings.PERSONALISE_MAX_OUTPUT_CHARS = 100_000
    ticks = Ticks()
    source = "{% for i in range(50000) %}{{ tick() }}{{ s }}{% endfor %}"
    assert "100,000 " + OUTPUT in failure(source, {"s": "y" * 100, "tick": ticks})
    assert ticks.count == 100_000 // 100 + 1  # the 1,001st copy passes 100,000 characters


@pytest.mark.parametrize(
    "source",
    [
        # Text written into a {% set %} block, a macro or a filter block is output too.
        "{% set big %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}{{ big|length }}",
        "{% macro m() %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        "{% filter upper %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endfilter %}",
    ],
    ids=["set block", "macro", "filter block"],
)
def test_text_written_into_blocks_counts_as_it_is_written(source, settings):
    settings.PERSONALISE_MAX_OUTPUT_CHARS = 1_000_000
    tracemalloc.start()
    try:
        assert OUTPUT in failure(source, {"s": "z" * 10_000})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 100,000 copies would be 1 GB; the budget stops it near 1 MB (each copy is new text).
    assert peak < 50_000_000


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ ['x'] * 1000000000 }}",
        "{{ 9 ** 99999999 }}",
        "{{ '%1000000000s' % 'x' }}",
        "{{ '%s' * 3 % ('a', 'b', 'c') ~ '%0*d' % (1000000000, 1) }}",
        "{{ '{:>1000000000}'.format('x') }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ 'x'|indent(1000000000, true) }}",
        "{{ '%1000000000d'|format(1) }}",
        "{% set s = 'x' * 1000000 %}{{ s.replace('x', s)|length }}",
        "{% set s = 'x' * 1000000 %}{{ s|replace('x', s)|length }}",
        "{% set s = 'x' * 1000000 %}{{ range(10000)|join(s)|length }}",
        "{% set s = 'x' * 1000000 %}{{ s.join(range(10000))|length }}",
        "{{ [1]|batch(1000000000, 'x')|list|length }}",
        "{{ lipsum(100000, max=100000)|length }}",
        "{{ (1).to_bytes(1000000000, 'big')|length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        # A list holding itself twice per level: 2^64 strings once printed.
        "{% set ns = namespace(l=['x' * 1000]) %}{% for i in range(64) %}"
        "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
        "{% set ns = namespace(l=['x' * 1000]) %}{% for i in range(64) %}"
        "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|tojson }}",
    ],
)
def test_a_value_over_the_output_budget_is_refused_before_it_is_built(source):
    tracemalloc.start()
    try:
        message = failure(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert OUTPUT in message
    assert peak < 100_000_000  # each would be gigabytes (or never finish) if built


def test_nothing_runs_when_a_template_is_compiled():
    # Compiling evaluates no constant expression, so no budget is needed for it.
    tracemalloc.start()
    try:
        check_template("{{ 'x'|center(1000000000) }}{{ 'x' ~ 'y' }}{{ lipsum(100000) }}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


def test_a_macro_calling_itself_stops_at_the_depth_budget(settings):
    source = "{% macro m(n) %}{{ tick() }}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}"
    ticks = Ticks()
    assert "50 " + DEPTH in failure(source, {"tick": ticks})
    # m(0) is the first level and its tick() the second: the 49th m's tick() is the
    # 50th level, the 50th m's tick() would be the 51st.
    assert ticks.count == 49
    # Blocks calling themselves, and caller() chains, are calls as well.
    assert DEPTH in failure("{% block b %}{{ self.b() }}{% endblock %}")
    assert DEPTH in failure("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}")


def test_pythons_own_recursion_limit_fails_the_render_cleanly(settings):
    settings.PERSONALISE_MAX_DEPTH = 1_000_000  # Python's limit comes first
    message = failure("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}")
    assert "deeper than Python allows (RecursionError)" in message
    # The sandbox is left in a state to render again.
    assert render("{% macro m(n) %}[{{ n }}]{% endmacro %}{{ m(1) }}", {}) == "[1]"


def test_wall_time_is_checked_at_every_counted_step(settings):
    settings.PERSONALISE_MAX_SECONDS = 0.2
    ticks = Ticks(sleep=0.01)  # a slow step the template cannot be blamed for per se
    assert "0.2 " + TIME in failure(
        "{% for i in range(1000) %}{{ tick() }}{% endfor %}", {"tick": ticks}
    )
    assert ticks.count < 1000


def test_one_budget_can_cover_all_the_renders_of_a_delivery():
    budget = RenderBudget(RenderLimits(loop_iterations=150))
    loop = "{% for i in range(100) %}.{% endfor %}"
    assert render(loop, {}, budget=budget) == "." * 100
    assert LOOPS.split(" (")[0] in failure(loop, budget=budget)


def test_ordinary_templates_render_as_before():
    source = (
        "{% macro item(p) %}<li>{{ p.name|title }}: {{ '%.2f'|format(p.price) }}</li>{% endmacro %}"
        "<p>Hi {{ customer.first_name|default('there') }},</p><ul>"
        "{% for p in products|sort(attribute='price') %}{{ item(p) }}{% endfor %}</ul>"
        "{{ products|map(attribute='name')|join(', ') }} · {{ products|sum(attribute='price') }}"
        " · {{ '{:>4}'.format(products|length) }} · {{ 'ab' * 2 }} · {{ 2 ** 10 }}"
        "{% set ns = namespace(total=0) %}"
        "{% for p in products %}{% set ns.total = ns.total + p.price %}{% endfor %}"
        " · {{ ns.total }} · {{ [1, 2] + [3] }} · {{ 'a' ~ 1 }}"
    )
    context = {
        "customer": {"first_name": "Ann"},
        "products": [{"name": "hat", "price": 12.5}, {"name": "boots", "price": 80}],
    }
    assert render(source, context) == (
        "<p>Hi Ann,</p><ul><li>Hat: 12.50</li><li>Boots: 80.00</li></ul>"
        "hat, boots · 92.5 ·    2 · abab · 1024 · 92.5 · [1, 2, 3] · a1"
    )


@pytest.mark.django_db
def test_preview_for_a_customer_over_budget_fails_with_the_reason(
    make_workspace, client_for, eager_tasks, django_capture_on_commit_callbacks
):
    """ "Preview for" renders in the request on the embedded default: the budget stops it
    and the map says why, instead of holding the web worker."""
    workspace = make_workspace("Heavy")
    _, heavy_reader = customers(
        workspace, [("a", "ann@example.test", {}), ("x", "x@example.test", {})]
    )
    heavy = NESTED_LOOPS.replace("{{ tick() }}", "x")
    html = (
        "<p><a href='https://shop.example/'>Shop</a></p>"
        f"{{% if customer.email == 'x@example.test' %}}{heavy}{{% endif %}}"
    )
    campaign = sendable_campaign(workspace, html, subject="S")
    with scope(workspace=workspace):
        owner = workspace.memberships.get().user
        variant = Variant.objects.get(node__campaign=campaign)
        Delivery.objects.create(  # Preview for shows the email of someone who received it
            workspace=workspace,
            node=variant.node,
            variant=variant,
            customer=heavy_reader,
            template_version=variant.template_version,
            status="sent",
        )
    url = f"/w/{workspace.slug}/campaigns/{campaign.pk}/clickmap/preview/"
    client = client_for(owner)
    with django_capture_on_commit_callbacks(execute=True):  # the render, queued on commit
        client.get(url, {"for": "x@example.test"})
    page = client.get(url, {"for": "x@example.test"})  # as htmx polls it
    assert page.status_code == 200
    text = page.content.decode()
    assert "The preview could not be rendered." in text and LOOPS in text
    with scopes_disabled():
        preview = Preview.objects.get(customer__external_id="x")
    assert preview.status == Preview.Status.FAILED and LOOPS in preview.error
