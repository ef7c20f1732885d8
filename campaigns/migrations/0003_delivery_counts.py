"""DeliveryCount and the triggers that keep it exact (campaigns/delivery_counts.py),
filled from the deliveries that exist. campaigns_delivery is not partitioned
(tracking/partitions.py rebuilds only the event tables), so its triggers stay put."""

import django.db.models.deletion
from django.db import migrations, models


def install(apps, schema_editor):
    from campaigns.delivery_counts import install

    install(schema_editor)


def uninstall(apps, schema_editor):
    from campaigns.delivery_counts import uninstall

    uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_templates_customers_deliveries"),
    ]

    operations = [
        migrations.CreateModel(
            name="DeliveryCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("status", models.CharField(max_length=10)),
                ("n", models.BigIntegerField()),
                (
                    "variant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("variant", "status"), name="one_count_per_status"
                    )
                ],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
