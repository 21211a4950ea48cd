"""The API's request body parser: DRF's JSON parser, with every unreadable body a 400 problem."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class PortalJSONParser(JSONParser):
    """A body nested deeper than Python's recursion limit makes `json` raise RecursionError, which DRF does not
    catch (a 2 KB body of `[` answered 500): it is a malformed body like any other."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body nests too deeply") from None
