"""Chart specifications drawn by static/console/console.js with Chart.js, over tables that already show the same
figures (the tables are the page; charts are drawn on top only when the built asset is there)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.staticfiles import finders

CHART_ASSET = "console/vendor/chart.umd.min.js"
OTHER_TEAMS = "other teams"


def asset_available() -> bool:
    """Whether the console's asset build ran (`make console-assets`): without it pages are tables only."""
    return finders.find(CHART_ASSET) is not None


def _number(value: Decimal | int | None) -> float:
    """Charts draw floats; every exact figure is in the table beside them."""
    return float(value or 0)


def leading_teams(team_totals: Mapping[str, Decimal], *, top: int) -> list[str]:
    """The `top` teams by total cost (then by slug)."""
    return [team for team, _ in sorted(team_totals.items(), key=lambda item: (-item[1], item[0]))[:top]]


def stacked_by_team(
    rows: Iterable[Mapping[str, Any]], *, top: int, team_totals: Mapping[str, Decimal] | None = None
) -> dict[str, Any]:
    """Cost per day stacked by team: the `top` teams by total cost over the range, the rest as one stack (rows of
    teams outside the top, or whose team is None, already summed, go to it). The teams' totals over the range, when
    the caller has them (the team report), spare a pass over every row."""
    rows = list(rows)
    if team_totals is None:
        summed: dict[str, Decimal] = {}
        for row in rows:
            summed[row["team"]] = summed.get(row["team"], Decimal(0)) + row["total_cost"]
        team_totals = summed
    leaders = leading_teams(team_totals, top=top)
    columns = [*leaders, OTHER_TEAMS] if len(team_totals) > len(leaders) else leaders
    leading = set(leaders)
    days: dict[Any, dict[str, Decimal]] = {}
    for row in rows:
        column = row["team"] if row["team"] in leading else OTHER_TEAMS
        day = days.setdefault(row["day"], {})
        day[column] = day.get(column, Decimal(0)) + row["total_cost"]
    return {
        "columns": columns,
        "days": [
            {"day": day, "cells": [cells.get(column, Decimal(0)) for column in columns], "total": sum(cells.values())}
            for day, cells in sorted(days.items())
        ],
    }


def stacked_chart(stack: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "bar",
        "stacked": True,
        "labels": [row["day"].isoformat() for row in stack["days"]],
        "datasets": [
            {"label": column, "data": [_number(row["cells"][index]) for row in stack["days"]]}
            for index, column in enumerate(stack["columns"])
        ],
    }


def token_chart(series: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    series = list(series)
    return {
        "type": "line",
        "labels": [row["day"].isoformat() for row in series],
        "datasets": [
            {"label": "input tokens", "data": [row["input_tokens"] for row in series]},
            {"label": "output tokens", "data": [row["output_tokens"] for row in series]},
        ],
    }


def cost_chart(series: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    series = list(series)
    return {
        "type": "bar",
        "stacked": True,
        "labels": [row["day"].isoformat() for row in series],
        "datasets": [
            {"label": "token cost", "data": [_number(row["token_cost"]) for row in series]},
            {"label": "GPU cost", "data": [_number(row["gpu_cost"]) for row in series]},
        ],
    }


def gpu_chart(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    return {
        "type": "bar",
        "labels": [row["day"].isoformat() for row in rows],
        "datasets": [{"label": "GPU-hours", "data": [_number(row["gpu_hours"]) for row in rows]}],
    }


def team_bar_chart(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    return {
        "type": "bar",
        "labels": [row["team"] for row in rows],
        "datasets": [{"label": "token cost", "data": [_number(row["token_cost"]) for row in rows]}],
    }


def pool_chart(pools: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    pools = list(pools)
    return {
        "type": "bar",
        "stacked": False,
        "labels": [f"{row['cluster'].name} / {row['pool'].accelerator_type}" for row in pools],
        "datasets": [
            {"label": "GPUs allocated", "data": [row["capacity"].allocated for row in pools]},
            {"label": "GPU capacity", "data": [row["capacity"].total for row in pools]},
        ],
    }


def health_chart(rows: Iterable[Any]) -> dict[str, Any]:
    """Error rate per bucket and key (rows of usage.selectors.request_health)."""
    rows = list(rows)
    labels = sorted({row.bucket_start.isoformat() for row in rows})
    keys = sorted({row.key for row in rows})
    cells = {(row.bucket_start.isoformat(), row.key): row for row in rows}
    return {
        "type": "line",
        "labels": labels,
        "datasets": [
            {
                "label": f"{key} error rate",
                "data": [
                    _number(cells[(label, key)].error_rate) if (label, key) in cells else None for label in labels
                ],
            }
            for key in keys
        ],
    }
