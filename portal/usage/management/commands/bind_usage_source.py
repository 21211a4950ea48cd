"""Allow a usage collector token to send events of a source prefix: manage.py bind_usage_source <token id> <prefix>."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.core.errors import DomainError
from portal.usage.services import collector_source_bind


class Command(BaseCommand):
    help = "Bind a 'usage:write' token to the event sources it may send (a prefix such as aigw://prod-eu1/, or '*')"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token_id", type=int)
        parser.add_argument("source_prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            binding = collector_source_bind(
                actor=None, token_id=options["token_id"], source_prefix=options["source_prefix"]
            )
        except DomainError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(f"token {binding.token_id} may send sources starting with {binding.source_prefix}")
