"""Invitations expire, remember who accepted them, and keep only their token's hash.

Existing invitations keep working links (their tokens are hashed in place) and expire
INVITATION_VALID_DAYS after they were sent, so old ones are expired at once.
"""

import hashlib
from datetime import timedelta

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import campaigns.models


def hash_tokens_and_set_expiry(apps, schema_editor):
    Invitation = apps.get_model("campaigns", "Invitation")
    valid = timedelta(days=settings.INVITATION_VALID_DAYS)
    for invitation in Invitation.objects.all():
        invitation.token_hash = hashlib.sha256(invitation.token.encode()).hexdigest()
        invitation.expires_at = invitation.created_at + valid
        invitation.save(update_fields=["token_hash", "expires_at"])


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_version_images"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="invitation",
            name="token_hash",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="invitation",
            name="expires_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="invitation",
            name="accepted_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(hash_tokens_and_set_expiry, migrations.RunPython.noop),
        migrations.RemoveField(model_name="invitation", name="token"),
        migrations.AlterField(
            model_name="invitation",
            name="token_hash",
            field=models.CharField(
                default=campaigns.models._unmailed_token_hash, max_length=64, unique=True
            ),
        ),
        migrations.AlterField(
            model_name="invitation",
            name="expires_at",
            field=models.DateTimeField(default=campaigns.models._invitation_expiry),
        ),
    ]
