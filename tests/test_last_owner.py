"""The last-owner rule under concurrency: two owners demoting or removing each other at
the same moment, each in its own transaction on its own PostgreSQL connection, always
leave the workspace one owner."""

import threading

import pytest
from django.db import connection
from django_scopes import scope, scopes_disabled

from campaigns.models import Membership, Role
from campaigns.services import MembershipError, member_change_role, member_remove

ROUNDS = 20


def act(operation, membership_pk, workspace, barrier, outcomes, key):
    """One owner's request: load the other's membership (as the view does), wait for the
    other thread, then change it."""
    try:
        with scope(workspace=workspace):
            membership = Membership.objects.get(pk=membership_pk)
            barrier.wait(timeout=30)
            try:
                if operation == "demote":
                    member_change_role(membership=membership, role=Role.VIEWER)
                else:
                    member_remove(membership=membership)
                outcomes[key] = "done"
            except MembershipError:
                outcomes[key] = "refused"
    finally:
        connection.close()


@pytest.mark.parametrize(
    "operations", [("demote", "demote"), ("remove", "remove"), ("demote", "remove")]
)
def test_two_owners_acting_on_each_other_at_once_always_leave_an_owner(
    transactional_db, make_user, make_workspace, operations
):
    ann, ben = make_user("ann"), make_user("ben")
    workspace = make_workspace("Acme", owner=ann)
    for _ in range(ROUNDS):
        with scopes_disabled():
            Membership.objects.filter(workspace=workspace).update(role=Role.OWNER)
            for user in (ann, ben):
                Membership.objects.get_or_create(
                    workspace=workspace, user=user, defaults={"role": Role.OWNER}
                )
            mine = {m.user_id: m.pk for m in Membership.objects.filter(workspace=workspace)}
        barrier = threading.Barrier(2)
        outcomes = {}
        threads = [
            # Ann acts on Ben's membership and Ben on Ann's.
            threading.Thread(
                target=act,
                args=(operations[0], mine[ben.pk], workspace, barrier, outcomes, "ann"),
            ),
            threading.Thread(
                target=act,
                args=(operations[1], mine[ann.pk], workspace, barrier, outcomes, "ben"),
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        with scopes_disabled():
            owners = Membership.objects.filter(workspace=workspace, role=Role.OWNER).count()
        assert owners == 1, outcomes
        assert sorted(outcomes.values()) == ["done", "refused"]
