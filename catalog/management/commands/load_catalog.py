"""Load a catalog YAML file (the starter catalog by default); idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.services import catalog_load_document
from portal.core.errors import ValidationFailed

STARTER_CATALOG = Path(__file__).resolve().parents[2] / "starter" / "catalog.yaml"


class Command(BaseCommand):
    help = "Create or update catalog models, versions and prices from a YAML file (default: the starter catalog)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=str(STARTER_CATALOG))

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        except yaml.YAMLError as error:
            raise CommandError(f"{path} is not valid YAML: {error}") from None
        try:
            report = catalog_load_document(actor=None, document=document)
        except ValidationFailed as error:
            lines = "\n".join(f"  {p.field}: {p.message}" for p in error.problems)
            raise CommandError(f"{path} was not loaded; nothing changed:\n{lines}") from None
        self.stdout.write(
            f"catalog loaded from {path.name}: {report.models_created} models created, {report.models_updated} updated, "
            f"{report.versions_created} versions created, {report.versions_updated} updated, "
            f"{report.prices_created} prices added, {report.unchanged} entries unchanged"
        )
