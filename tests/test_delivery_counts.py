"""DeliveryCount is exact: after any write to campaigns_delivery, by any means, it equals
`count(*) … GROUP BY variant_id, status` over the deliveries; and the metrics that read it
count the same customers as a distinct count over the deliveries."""

import pytest
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext
from django_scopes import scope, scopes_disabled
from django_scopes.exceptions import ScopeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import delivery_counts
from campaigns.models import Campaign, Delivery, DeliveryCount, EmailNode, Variant
from clickmap import metrics
from tests.factories import customers
from tests.rollup_world import T0

STATUSES = Delivery.Status.values


def grouped() -> dict:
    """(variant id, status) -> deliveries, counted from the deliveries themselves."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT variant_id, status, count(*) FROM campaigns_delivery GROUP BY 1, 2")
        return {(v, s): n for v, s, n in cursor.fetchall()}


def stored() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT variant_id, status, n FROM campaigns_deliverycount")
        return {(v, s): n for v, s, n in cursor.fetchall()}


def assert_exact():
    assert stored() == grouped()


@pytest.fixture
def people(world):
    """Six more customers, without deliveries yet."""
    return customers(
        world.workspace, [(f"n{i}", f"n{i}@example.test", {"tier": i % 2}) for i in range(6)]
    )


def delivery(world, customer, variant, status=Delivery.Status.QUEUED):
    return Delivery(
        workspace=world.workspace,
        node=variant.node,
        variant=variant,
        customer=customer,
        template_version=variant.template_version,
        format=variant.format,
        status=status,
    )


def test_orm_create_is_counted(world):
    a, b, c = (v.pk for v in world.variants)
    # Customers 0, 2, 4 got A, 1 and 3 got B, 5 got B and bounced; all six got C.
    assert stored() == {(a, "sent"): 3, (b, "sent"): 2, (b, "bounced"): 1, (c, "sent"): 6}
    assert_exact()


def test_bulk_create_counts_inserted_rows_only(world, people):
    a, b, _ = world.variants
    with scopes_disabled():
        Delivery.objects.bulk_create([delivery(world, p, a) for p in people[:4]])
        assert_exact()
        # Conflicts on (node, customer) are skipped, and so is their count.
        again = [delivery(world, p, b) for p in people]
        Delivery.objects.bulk_create(again, ignore_conflicts=True)
    assert stored()[(a.pk, "queued")] == 4
    assert stored()[(b.pk, "queued")] == 2
    assert_exact()


def test_queryset_update_of_status_moves_counts(world):
    with scopes_disabled():
        Delivery.objects.filter(node=world.nodes[1]).update(status=Delivery.Status.DELIVERED)
        assert_exact()
        Delivery.objects.filter(status="sent").update(status=Delivery.Status.FAILED)
    assert (world.variants[0].pk, "sent") not in stored()  # a count of 0 is no row
    assert_exact()


def test_save_of_one_delivery_moves_its_count(world):
    first = world.deliveries[0]
    with scopes_disabled():
        first.status = Delivery.Status.DELIVERED
        first.save()
        assert_exact()
        first.message_id = "<changed@example.test>"  # no count changes
        first.save(update_fields=["message_id"])
    assert stored()[(first.variant_id, "delivered")] == 1
    assert_exact()


def test_moving_a_delivery_to_another_variant_moves_its_count(world):
    a, b, _ = world.variants
    moved = world.deliveries[0]
    with scopes_disabled():
        moved.variant = b
        moved.save()
        assert stored()[(a.pk, "sent")] == 2 and stored()[(b.pk, "sent")] == 3
        Delivery.objects.filter(variant=b).update(variant=a, status="delivered")
    assert stored() == {
        (a.pk, "sent"): 2,
        (a.pk, "delivered"): 4,  # b's three sent and one bounced
        (world.variants[2].pk, "sent"): 6,
    }
    assert_exact()


def test_raw_sql_writes_are_counted(world, people):
    a = world.variants[0]
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO campaigns_delivery (workspace_id, node_id, variant_id, customer_id,
                   template_version_id, format, status, error, message_id, created_at)
               SELECT %s, %s, %s, c.id, %s, 'html', 'sent', '', '', now()
               FROM campaigns_customer c WHERE c.id = ANY(%s)""",
            [world.workspace.pk, a.node_id, a.pk, a.template_version_id, [p.pk for p in people]],
        )
        assert_exact()
        cursor.execute("UPDATE campaigns_delivery SET status = 'bounced' WHERE id % 2 = 0")
        assert_exact()
        cursor.execute("DELETE FROM campaigns_delivery WHERE id % 3 = 0")
    assert_exact()


def test_bulk_loads_with_replica_role_are_counted(world, people):
    # bench/rollups_data.py loads with foreign-key triggers off this way.
    a = world.variants[0]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            """INSERT INTO campaigns_delivery (workspace_id, node_id, variant_id, customer_id,
                   template_version_id, format, status, error, message_id, created_at)
               SELECT %s, %s, %s, c.id, %s, 'html', 'delivered', '', '', now()
               FROM campaigns_customer c WHERE c.id = ANY(%s)""",
            [world.workspace.pk, a.node_id, a.pk, a.template_version_id, [p.pk for p in people]],
        )
    assert stored()[(a.pk, "delivered")] == len(people)
    assert_exact()


def test_deleting_deliveries_takes_their_counts(world):
    with scopes_disabled():
        world.deliveries[0].delete()
        assert_exact()
        Delivery.objects.filter(node=world.nodes[1]).delete()
    assert world.variants[2].pk not in {v for v, _ in stored()}
    assert_exact()


def test_cascading_deletes_take_the_counts(world, people):
    version = world.variants[0].template_version
    with scopes_disabled():
        kept = Campaign.objects.create(workspace=world.workspace, name="Kept")
        node = EmailNode.objects.create(campaign=kept, name="Email")
        variant = Variant.objects.create(node=node, subject="s", template_version=version)
        delivery(world, people[0], variant).save()
        world.customers[0].delete()  # cascades to the customer's deliveries
        assert_exact()
        # Delivery.variant is PROTECT: a campaign with deliveries is not deleted at all.
        with pytest.raises(ProtectedError):
            world.campaign.delete()
        assert_exact()
        Delivery.objects.filter(node__campaign=world.campaign).delete()
        world.campaign.delete()  # cascades to its nodes and variants
    assert stored() == {(variant.pk, "queued"): 1} == grouped()


def test_truncate_empties_the_counts(world):
    with connection.cursor() as cursor:
        # TRUNCATE refuses tables with foreign-key checks still pending in this transaction.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE campaigns_delivery CASCADE")
    assert stored() == {} == grouped()


def test_install_counts_the_deliveries_that_exist(world):
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE needs none pending
        cursor.execute("DELETE FROM campaigns_deliverycount")
    assert stored() == {}
    with connection.schema_editor() as editor:
        delivery_counts.install(editor)
    assert_exact()


def test_counts_are_read_inside_a_workspace_scope_only(world, make_workspace):
    with pytest.raises(ScopeError):
        list(DeliveryCount.objects.all())
    with scope(workspace=make_workspace()):
        assert not DeliveryCount.objects.exists()
    with scope(workspace=world.workspace):
        assert DeliveryCount.objects.count() == 4


# One write to campaigns_delivery: (kind, customer index, variant index, status).
writes = st.lists(
    st.tuples(
        st.sampled_from(["create", "bulk", "save", "update", "move", "delete", "raw"]),
        st.integers(0, 11),
        st.integers(0, 2),
        st.sampled_from(STATUSES),
    ),
    max_size=25,
)


def apply(world, everyone, kind, who, which, status):
    variant = world.variants[which]
    customer = everyone[who]
    mine = Delivery.objects.filter(customer=customer)
    if kind == "create":
        if not mine.filter(node=variant.node_id).exists():
            delivery(world, customer, variant, status).save()
    elif kind == "bulk":  # this customer and the next in the variant's node
        rows = [delivery(world, c, variant, status) for c in everyone[who : who + 2]]
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    elif kind == "save":
        for one in mine[:1]:
            one.status = status
            one.save()
    elif kind == "update":  # every delivery of the variant with the customer's parity
        parity = Delivery.objects.filter(variant=variant, customer__in=everyone[who % 2 :: 2])
        parity.update(status=status)
    elif kind == "move":  # to the other variant of the first node, or within node 2
        mine.filter(node=variant.node_id).update(variant=variant)
    elif kind == "delete":
        mine.filter(status=status).delete()
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_delivery SET status = %s WHERE customer_id = %s",
                [status, customer.pk],
            )


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=writes)
def test_any_sequence_of_writes_keeps_the_counts_exact(world, people, plan):
    everyone = world.customers + people
    with scopes_disabled(), transaction.atomic():
        for write in plan:
            apply(world, everyone, *write)
            assert_exact()
        transaction.set_rollback(True)  # the next example starts from the same world


def distinct_customers(world, statuses, variants=None, segment=None):
    deliveries = Delivery.objects.filter(status__in=statuses, node__campaign=world.campaign)
    if variants is not None:
        deliveries = deliveries.filter(variant__in=variants)
    if segment is not None:
        deliveries = deliveries.filter(customer__attributes__tier=1)
    return deliveries.values("customer_id").distinct().count()


def test_sent_and_delivered_equal_distinct_customers_in_every_scope(world):
    first, second = world.nodes
    a, b, c = world.variants
    base = dict(workspace=world.workspace, campaign_id=world.campaign.pk)
    cases = [
        (metrics.Scope(**base, node_id=first.pk), [a, b], None),
        (metrics.Scope(**base, variant_id=b.pk), [b], None),
        (metrics.Scope(**base, node_id=second.pk, date_from=T0.date()), [c], None),
        (metrics.Scope(**base), None, None),  # both emails: a customer counts once
        (metrics.Scope(**base, node_id=first.pk, segment=world.segment), [a, b], "tier 1"),
    ]
    with scope(workspace=world.workspace):
        Delivery.objects.filter(pk=world.deliveries[0].pk).update(status="delivered")
        for s, variants, segment in cases:
            totals = metrics.email_totals(s)
            sent = distinct_customers(world, metrics.SENT, variants, segment)
            delivered = distinct_customers(world, metrics.DELIVERED, variants, segment)
            assert (totals.sent, totals.delivered) == (sent, delivered), s
            assert metrics.delivered_customers(s) == delivered, s
    assert (totals.sent, totals.delivered) == (3, 2)  # customers 1, 3 and 5 (bounced)


def test_one_email_reads_the_counts_in_one_query(world):
    one_email = metrics.Scope(workspace=world.workspace, node_id=world.nodes[0].pk)
    with scope(workspace=world.workspace), CaptureQueriesContext(connection) as queries:
        assert metrics.delivered_customers(one_email) == 5
    assert len(queries) == 1
    assert "campaigns_deliverycount" in queries[0]["sql"]


def test_a_scenario_with_one_email_sent_so_far_reads_the_counts(world):
    campaign = metrics.Scope(workspace=world.workspace, campaign_id=world.campaign.pk)
    with scope(workspace=world.workspace):
        assert metrics.delivered_customers(campaign) == 6  # not 11: customers count once
        Delivery.objects.filter(node=world.nodes[1]).update(status="queued")
        with CaptureQueriesContext(connection) as queries:
            assert metrics.delivered_customers(campaign) == 5
    assert len(queries) == 1
