"""Issue a portal API token from the command line (printed once), e.g. for Backstage or a collector."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.core.errors import DomainError
from portal.tenancy import selectors, services
from portal.tokens.models import Scope
from portal.tokens.services import api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for a service principal (--service NAME --scope S) or a person (--user REF)"

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--service", help="service principal name, e.g. backstage")
        who.add_argument("--user", help="username or Backstage ref of a person")
        parser.add_argument("--scope", action="append", default=[], choices=[scope.value for scope in Scope])
        parser.add_argument("--name", default="issued from the command line")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["service"]:
                principal = services.service_principal_get_or_create(actor=None, name=options["service"])
            else:
                found = selectors.user_get_by_reference(reference=options["user"])
                if found is None:
                    raise CommandError(f"no user {options['user']!r}")
                principal = found
            issued = api_token_issue(actor=None, principal=principal, name=options["name"], scopes=options["scope"])
        except DomainError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(issued.plaintext)
        # The id names the token in `bind_usage_source` and `/api/v1/tokens`; stdout stays the token alone.
        self.stderr.write(f"token id {issued.token.pk}")
