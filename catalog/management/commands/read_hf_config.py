"""Set a model version's architecture from the model's Hugging Face config.json file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import ModelVersion
from catalog.services import model_version_update
from portal.core.errors import ValidationFailed


class Command(BaseCommand):
    help = "Read a Hugging Face config.json into a version's architecture (what right-sizing needs)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="catalog model slug")
        parser.add_argument("version", help="version label")
        parser.add_argument("config", help="path of the model's config.json")
        parser.add_argument(
            "--parameters",
            type=int,
            help="parameter count, when the config cannot tell (mixtures of experts, encoders)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        version = ModelVersion.objects.filter(model__slug=options["model"], version=options["version"]).first()
        if version is None:
            raise CommandError(f"no version '{options['version']}' of model '{options['model']}'")
        path = Path(options["config"])
        try:
            text = path.read_text()
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        changes: dict[str, Any] = {"hf_config": text}
        if options["parameters"] is not None:
            changes["parameters"] = options["parameters"]
        try:
            updated = model_version_update(actor=None, version=version, changes=changes)
        except ValidationFailed as error:
            lines = "\n".join(f"  {p.field}: {p.message}" for p in error.problems)
            raise CommandError(f"{path} was not read; nothing changed:\n{lines}") from None
        architecture = updated.architecture
        self.stdout.write(
            f"{updated}: {architecture['parameters']:,} parameters ({architecture['weight_dtype']}), "
            f"{architecture['layers']} layers, {architecture['attention']} attention, {architecture['max_context']:,} tokens"
        )
