"""Segment rollups (clickmap/segment_rollups.py): the tables, and the triggers that keep
segment delivery counts and log membership changes."""

import django.db.models.deletion
from django.db import migrations, models


def install(apps, schema_editor):
    from clickmap import segment_rollups

    segment_rollups.install(schema_editor)


def uninstall(apps, schema_editor):
    from clickmap import segment_rollups

    segment_rollups.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_delivery_counts"),
        ("clickmap", "0004_day_and_span_rollups"),
    ]

    operations = [
        migrations.CreateModel(
            name="MembershipChange",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("customer_id", models.BigIntegerField(null=True)),
                ("segment_id", models.BigIntegerField(null=True)),
            ],
        ),
        migrations.CreateModel(
            name="SegmentDeliveryCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("variant_id", models.BigIntegerField()),
                ("status", models.CharField(max_length=10)),
                ("n", models.BigIntegerField(default=0)),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "variant_id", "status"),
                        name="one_segment_delivery_count",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentEmailRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("clickers_all", models.BigIntegerField(default=0)),
                ("clickers_rel", models.BigIntegerField(default=0)),
                ("openers_all", models.BigIntegerField(default=0)),
                ("openers_rel", models.BigIntegerField(default=0)),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "variant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("segment", "variant"), name="one_segment_email")
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentEmailSpanRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("device", models.CharField(blank=True, max_length=8)),
                ("reliable", models.BooleanField()),
                ("day", models.DateField()),
                ("since", models.DateField()),
                ("n", models.BigIntegerField(default=0)),
                ("kind", models.CharField(choices=[("c", "Click"), ("o", "Open")], max_length=1)),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "variant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "variant", "kind", "device", "reliable", "day", "since"),
                        name="one_segment_email_span",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentLinkDayRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("device", models.CharField(max_length=8)),
                ("total_all", models.BigIntegerField(default=0)),
                ("total_rel", models.BigIntegerField(default=0)),
                ("window_all", models.BigIntegerField(default=0)),
                ("window_rel", models.BigIntegerField(default=0)),
                (
                    "link",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.templatelink",
                    ),
                ),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "variant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "variant", "link", "day", "device"),
                        name="one_segment_link_day",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentLinkRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("total_all", models.BigIntegerField(default=0)),
                ("total_rel", models.BigIntegerField(default=0)),
                ("window_all", models.BigIntegerField(default=0)),
                ("window_rel", models.BigIntegerField(default=0)),
                ("unique_all", models.BigIntegerField(default=0)),
                ("unique_rel", models.BigIntegerField(default=0)),
                (
                    "link",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.templatelink",
                    ),
                ),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "variant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "variant", "link"), name="one_segment_link"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentLinkSpanRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("device", models.CharField(blank=True, max_length=8)),
                ("reliable", models.BooleanField()),
                ("day", models.DateField()),
                ("since", models.DateField()),
                ("n", models.BigIntegerField(default=0)),
                (
                    "link",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.templatelink",
                    ),
                ),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "variant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.variant",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "variant", "link", "device", "reliable", "day", "since"),
                        name="one_segment_link_span",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SegmentMember",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.customer",
                    ),
                ),
                (
                    "segment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.segment",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="campaigns.workspace",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("segment", "customer"), name="one_segment_member"
                    )
                ],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
