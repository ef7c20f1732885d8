"""A click implies an open (docs/metrics.md): the recipients' opened flags, the email
counters and the open spans now count a clicker without a recorded open as an opener.
Rollups kept before are rebuilt from the raw events (`recompute`); a database without
any is left alone."""

from django.db import migrations


def rebuild(apps, schema_editor):
    if apps.get_model("clickmap", "RecipientRollup").objects.exists():
        from clickmap.rollups import recompute

        recompute()


class Migration(migrations.Migration):
    dependencies = [("clickmap", "0006_per_customer_rollup_keys")]

    operations = [migrations.RunPython(rebuild, migrations.RunPython.noop)]
