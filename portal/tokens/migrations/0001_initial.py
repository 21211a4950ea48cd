"""API tokens move from the api app to their own: the model's state moves, its table (api_apitoken) and rows stay.

The api app's 0005 drops the model from its state after this one; usage's 0012 points its foreign key here in between.
Django's documented way to move a model between apps without copying data: SeparateDatabaseAndState with the table
name kept (https://docs.djangoproject.com/en/5.2/ref/migration-operations/#separatedatabaseandstate). The content type
is renamed rather than recreated, so admin permissions and log entries follow the model.
"""

import django.contrib.postgres.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_type_to_tokens(apps, schema_editor):  # type: ignore[no-untyped-def]
    _rename_content_type(apps, schema_editor, old="api", new="tokens")


def content_type_to_api(apps, schema_editor):  # type: ignore[no-untyped-def]
    _rename_content_type(apps, schema_editor, old="tokens", new="api")


def _rename_content_type(apps, schema_editor, *, old: str, new: str) -> None:  # type: ignore[no-untyped-def]
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if ContentType.objects.using(db).filter(app_label=new, model="apitoken").exists():
        return  # post_migrate of an earlier run created it already: keep that one, the old one stays stale
    ContentType.objects.using(db).filter(app_label=old, model="apitoken").update(app_label=new)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("api", "0004_english_labels"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        ("name", models.CharField(max_length=100)),
                        ("prefix", models.CharField(max_length=16, unique=True)),
                        ("token_hash", models.CharField(max_length=64, unique=True)),
                        (
                            "scopes",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.CharField(
                                    choices=[
                                        ("backstage", "Backstage (may act on behalf of users)"),
                                        ("usage:write", "Usage collector (may post usage events)"),
                                        ("admin", "Platform admin"),
                                        (
                                            "catalog:read",
                                            "Catalog mirror (reads every team, its deployments and the model catalog)",
                                        ),
                                    ],
                                    max_length=20,
                                ),
                                blank=True,
                                default=list,
                                size=None,
                            ),
                        ),
                        ("expires_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "principal",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_tokens",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "API token",
                        "verbose_name_plural": "API tokens",
                        "db_table": "api_apitoken",
                        "ordering": ["-created_at"],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("scopes__contained_by", ["backstage", "usage:write", "admin", "catalog:read"])
                                ),
                                name="api_token_scopes_known",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_tokens, content_type_to_api),
    ]
