"""The list CSV: the JSON page's items as rows, values exactly as the JSON writes them, chosen by ?format=csv or
Accept: text/csv; problems stay problems."""

from __future__ import annotations

import csv
import io

import pytest

from portal.api.renderers import items_csv
from tests.conftest import RoleMatrix, assert_problem
from tests.factories import AcceleratorPoolFactory

pytestmark = pytest.mark.django_db


def test_items_become_rows_with_exact_values() -> None:
    items = [
        {"name": "a", "cost": "0.000000001234", "status": {"phase": "Ready", "ready": True}, "tags": ["x", "y"]},
        {"name": "b", "cost": None, "status": {"phase": "Failed", "ready": False}, "extra": 3},
    ]
    assert items_csv(items) == (
        "name,cost,status.phase,status.ready,tags,extra\n"
        'a,0.000000001234,Ready,true,"[""x"",""y""]",\n'
        "b,,Failed,false,,3\n"
    )
    assert items_csv([]) == "\n"


def test_a_list_as_csv_is_its_json_page(matrix: RoleMatrix) -> None:
    for index in range(3):
        AcceleratorPoolFactory(cluster__name=f"gpu-{index}")
    client = matrix.client("viewer")
    page = client.get("/api/v1/clusters", {"page_size": 2}).json()
    response = client.get("/api/v1/clusters", {"page_size": 2, "format": "csv"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["X-Total-Count"] == "3"
    assert response["Link"] == '<http://testserver/api/v1/clusters?format=csv&page=2&page_size=2>; rel="next"'
    assert response["Content-Disposition"] == 'attachment; filename="clusters.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["name"] for row in rows] == [item["name"] for item in page["results"]]
    assert [row["region"] for row in rows] == [item["region"] for item in page["results"]]
    assert client.get("/api/v1/clusters", {"page_size": 2}, HTTP_ACCEPT="text/csv").content == response.content


def test_a_problem_asked_for_as_csv_is_still_a_problem(matrix: RoleMatrix) -> None:
    client = matrix.client("outsider")
    body = assert_problem(client.get("/api/v1/teams/alpha/deployments", {"format": "csv"}), 404)
    assert body["status"] == 404
    assert_problem(client.get("/api/v1/teams/alpha/members", HTTP_ACCEPT="text/csv"), 404)
