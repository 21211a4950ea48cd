"""The sandbox gateway's global rate limit: Envoy Gateway's BackendTrafficPolicy `rateLimit.global.rules`
translated the way EG translates them, counted the way envoyproxy/ratelimit counts them.

Facts (sources next to the code that relies on them):
- EG (internal/gatewayapi/backendtrafficpolicy.go buildRateLimitRule @v1.9.0): every clientSelector's headers
  are ANDed into one rule; a header with no `type` but a value is Exact; Distinct takes no value and no invert.
- EG (internal/xds/translator/ratelimit.go buildRouteRateLimits @v1.9.0): a rule is one descriptor; a shared rule
  keys on the policy's rule name (one counter across routes), a non-shared one on the route (one counter per route
  rule match); Distinct headers become `request_headers` actions (the header value is part of the key, and an
  absent header means no descriptor, so the rule does not apply), the others `header_value_match` actions with
  `expect_match: !invert`; `cost.request` is the descriptor's hits_addend, and `cost.response` adds a second
  descriptor with the same actions and `apply_on_stream_done: true`.
- Envoy (source/extensions/filters/common/ratelimit_config/ratelimit_config.cc): a hits_addend read from metadata
  that is absent or not a number drops the descriptor (nothing is charged).
- envoyproxy/ratelimit (src/utils/utilities.go GetHitsAddends): a descriptor without hits_addend counts 1
  (`max(1, request.hits_addend)`), one with hits_addend 0 is check-only; (src/limiter/base_limiter.go
  GetResponseDescriptorStatus) a descriptor is over the limit when `count after adding hits > requests`, so a
  check-only request is refused only once the bucket is strictly above the limit, and `requests: 0` blocks only a
  rule that charges at least 1 per request (the portal's blocking rules set no cost, so they block);
  (src/redis/fixed_cache_impl.go) hits are added even when over the limit (stopCacheKeyIncrementWhenOverlimit is
  off by default); (src/utils/utilities.go UnitToDivider) fixed windows aligned to the epoch, Month = 30 days,
  Year = 365 days; shadow-mode rules never refuse.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

UNIT_SECONDS = {
    "Second": 1,
    "Minute": 60,
    "Hour": 3600,
    "Day": 86400,
    "Week": 7 * 86400,
    "Month": 30 * 86400,
    "Year": 365 * 86400,
}
_MAX_COUNTERS = 50_000


def header_matches(actual: str | None, kind: str, value: str, pattern: re.Pattern[str] | None) -> bool:
    """Envoy's HeaderMatcher: an absent header never matches; Exact compares, RegularExpression matches the whole
    value (RE2 full match, compiled into `pattern`)."""
    if actual is None:
        return False
    if kind == "Exact":
        return actual == value
    return pattern is not None and pattern.fullmatch(actual) is not None


class InvalidPolicy(ValueError):
    """EG refuses the policy; it then answers 500 on every route the policy covers."""


@dataclass(frozen=True)
class HeaderSelector:
    name: str  # lower case
    kind: str  # Exact | RegularExpression | Distinct
    value: str = ""
    invert: bool = False
    pattern: re.Pattern[str] | None = None

    def matches(self, headers: Mapping[str, str]) -> bool:
        """Envoy HeaderMatcher (the inversion is applied by the caller)."""
        return header_matches(headers.get(self.name), self.kind, self.value, self.pattern)


@dataclass(frozen=True)
class Cost:
    number: int | None = None
    metadata_namespace: str = ""
    metadata_key: str = ""


@dataclass(frozen=True)
class LimitRule:
    policy: str  # namespace/name of the BackendTrafficPolicy
    index: int
    selectors: tuple[HeaderSelector, ...]
    requests: int
    unit: str
    shared: bool
    shadow: bool
    request_cost: Cost | None
    response_cost: Cost | None

    @property
    def window(self) -> int:
        return UNIT_SECONDS[self.unit]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Gateway API regular expressions are RE2 (EG validates them with Go's regexp): refuse what RE2 lacks
    (look-around, back-references) so a pattern the real gateway would reject is not silently accepted here."""
    if re.search(r"\(\?<?[=!]|\\[1-9]|\(\?P=", pattern):
        raise InvalidPolicy(f"{pattern!r} is not an RE2 regular expression (look-around or back-reference)")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InvalidPolicy(f"{pattern!r} is not a valid regular expression: {error}") from None


def _cost(raw: object) -> Cost | None:
    if not isinstance(raw, dict):
        return None
    if raw.get("from") == "Number":
        number = raw.get("number")
        return Cost(number=int(number) if isinstance(number, int) else 0)
    if raw.get("from") == "Metadata":
        metadata = raw.get("metadata") or {}
        return Cost(metadata_namespace=str(metadata.get("namespace", "")), metadata_key=str(metadata.get("key", "")))
    raise InvalidPolicy(f"unknown cost source {raw.get('from')!r}")


def parse_rules(policy: Mapping[str, Any]) -> list[LimitRule]:
    """The global rules of one BackendTrafficPolicy; raises InvalidPolicy where EG's translation would fail."""
    metadata = policy.get("metadata") or {}
    name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    rate_limit = (policy.get("spec") or {}).get("rateLimit") or {}
    rules = []
    for index, rule in enumerate((rate_limit.get("global") or {}).get("rules") or []):
        selectors: list[HeaderSelector] = []
        for selector in rule.get("clientSelectors") or []:
            if any(selector.get(key) for key in ("methods", "path", "sourceCIDR", "queryParams")):
                raise InvalidPolicy(f"rule {index}: the sandbox gateway matches clients on headers only")
            if not selector.get("headers"):
                raise InvalidPolicy(f"rule {index}: a client selector needs at least one match")
            for header in selector["headers"]:
                kind = header.get("type") or "Exact"
                value = header.get("value")
                invert = bool(header.get("invert"))
                header_name = str(header.get("name", "")).lower()
                if kind == "Distinct":
                    if value is not None or invert:
                        raise InvalidPolicy(f"rule {index}: a Distinct header match takes no value and no invert")
                    selectors.append(HeaderSelector(header_name, kind))
                elif kind in ("Exact", "RegularExpression") and value is not None:
                    pattern = compile_regex(str(value)) if kind == "RegularExpression" else None
                    selectors.append(HeaderSelector(header_name, kind, str(value), invert, pattern))
                else:
                    raise InvalidPolicy(f"rule {index}: header match type {kind!r} needs a value")
        limit = rule.get("limit") or {}
        unit = str(limit.get("unit", ""))
        if unit not in UNIT_SECONDS:
            raise InvalidPolicy(f"rule {index}: unknown unit {unit!r}")
        if limit.get("fromMetadata"):
            logger.info(
                "sandbox gateway: %s rule %d: limit.fromMetadata is not modelled; the static limit applies", name, index
            )
        cost = rule.get("cost") or {}
        rules.append(
            LimitRule(
                policy=name,
                index=index,
                selectors=tuple(selectors),
                requests=int(limit.get("requests", 0)),
                unit=unit,
                shared=bool(rule.get("shared")),
                shadow=bool(rule.get("shadowMode")),
                request_cost=_cost(cost.get("request")),
                response_cost=_cost(cost.get("response")),
            )
        )
    return rules


def _hits(cost: Cost | None, metadata: Mapping[str, Mapping[str, Any]]) -> int | None:
    """hits_addend of a descriptor: 1 when the rule sets no cost, the number, or the metadata value; None when the
    metadata is absent or not a number (Envoy then sends no descriptor)."""
    if cost is None:
        return 1
    if cost.number is not None:
        return cost.number
    value = (metadata.get(cost.metadata_namespace) or {}).get(cost.metadata_key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


class RateLimiter:
    """Fixed-window counters of one gateway (what the rate-limit service keeps in Redis)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    @staticmethod
    def _descriptor(rule: LimitRule, headers: Mapping[str, str], route_key: str) -> tuple[Any, ...] | None:
        values: list[str] = []
        for selector in rule.selectors:
            if selector.kind == "Distinct":
                value = headers.get(selector.name)
                if value is None:
                    return None
                values.append(value)
            elif selector.matches(headers) == selector.invert:  # expect_match = !invert
                return None
        scope = ("shared", rule.policy) if rule.shared else ("route", route_key)
        return (*scope, rule.index, tuple(values))

    def _add(self, key: tuple[Any, ...], rule: LimitRule, hits: int, now: float) -> bool:
        """Add hits to the window's counter; True when the descriptor is over the limit (and not in shadow mode)."""
        window_start = int(now) - int(now) % rule.window
        counter = (*key, rule.window, window_start)
        with self._lock:
            after = self._counts.get(counter, 0) + hits
            self._counts[counter] = after
            if len(self._counts) > _MAX_COUNTERS:
                for stale in [item for item in self._counts if item[-1] + item[-2] <= now]:
                    del self._counts[stale]
        return after > rule.requests and not rule.shadow

    def check(
        self,
        rules: list[LimitRule],
        headers: Mapping[str, str],
        route_key: str,
        metadata: Mapping[str, Mapping[str, Any]],
        now: float,
    ) -> bool:
        """The request-time call: charge each applicable rule's request cost; True when the request may pass."""
        over = False
        for rule in rules:
            key = self._descriptor(rule, headers, route_key)
            hits = _hits(rule.request_cost, metadata)
            if key is None or hits is None:
                continue
            over = self._add(key, rule, hits, now) or over
        return not over

    def charge(
        self,
        rules: list[LimitRule],
        headers: Mapping[str, str],
        route_key: str,
        metadata: Mapping[str, Mapping[str, Any]],
        now: float,
    ) -> None:
        """The stream-done call: charge each applicable rule's response cost (never refuses anything)."""
        for rule in rules:
            if rule.response_cost is None:
                continue
            key = self._descriptor(rule, headers, route_key)
            hits = _hits(rule.response_cost, metadata)
            if key is None or hits is None:
                continue
            self._add(key, rule, hits, now)

    def count(self, rule: LimitRule, headers: Mapping[str, str], route_key: str, now: float) -> int:
        """The current window's counter of a rule for these headers (tests and debugging)."""
        key = self._descriptor(rule, headers, route_key)
        if key is None:
            return 0
        window_start = int(now) - int(now) % rule.window
        with self._lock:
            return self._counts.get((*key, rule.window, window_start), 0)
