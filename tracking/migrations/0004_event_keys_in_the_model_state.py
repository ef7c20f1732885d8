"""The partitioned event tables' real keys in Django's model state (docs/partitioning.md).

tracking/0003 rebuilt both tables partitioned by month of `at`, whose keys must hold
`at`: the primary key became (id, at), the event's uniqueness (event_id, at), and `id`
the default of a sequence of the table's own. The database already has all of that; the
model state now says so (a composite primary key, a unique constraint, `id` a column with
a database default), so `makemigrations` sees no difference. The two indexes get names
of their own instead of the generated ones.
"""

from django.db import migrations, models

import tracking.models


def _state(model: str) -> list:
    return [
        migrations.AddField(
            model_name=model,
            name="pk",
            field=models.CompositePrimaryKey(
                "id", "at", blank=True, editable=False, primary_key=True, serialize=False
            ),
        ),
        migrations.AlterField(
            model_name=model,
            name="event_id",
            field=models.UUIDField(editable=False),
        ),
        migrations.AlterField(
            model_name=model,
            name="id",
            field=models.BigIntegerField(db_default=tracking.models.NextId(), editable=False),
        ),
        migrations.AddConstraint(
            model_name=model,
            constraint=models.UniqueConstraint(
                fields=("event_id", "at"), name=f"tracking_{model}_event_id_key"
            ),
        ),
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_delivery_counts"),
        ("tracking", "0003_partition_events"),
    ]

    operations = [
        migrations.RenameIndex(
            model_name="clickevent",
            new_name="clickevent_delivery_at",
            old_name="tracking_cl_deliver_c23f46_idx",
        ),
        migrations.RenameIndex(
            model_name="clickevent",
            new_name="clickevent_workspace_at",
            old_name="tracking_cl_workspa_53394f_idx",
        ),
        migrations.RenameIndex(
            model_name="openevent",
            new_name="openevent_delivery_at",
            old_name="tracking_op_deliver_8e98f2_idx",
        ),
        migrations.RenameIndex(
            model_name="openevent",
            new_name="openevent_workspace_at",
            old_name="tracking_op_workspa_93d2a1_idx",
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=_state("clickevent") + _state("openevent")
        ),
    ]
