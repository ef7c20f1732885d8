"""Partition the raw click and open tables by month of `at` (docs/partitioning.md)."""

from django.db import migrations


def forwards(apps, schema_editor):
    from tracking.partitions import partition_event_tables

    partition_event_tables()


class Migration(migrations.Migration):
    atomic = True

    dependencies = [("tracking", "0002_rollups")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
