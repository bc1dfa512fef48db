"""The web pages' session: who is signed in and which features their role may use, read
from the routes' own role declarations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.test_api_world import World, build_world
from viewer_api.routes.session import FEATURES


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    yield from build_world(session_factory, tmp_path)


def test_the_session_names_the_account_and_what_its_role_may_do(world: World) -> None:
    assert world.get(None, "/api/v1/auth/session").status_code == 401
    me = world.get("nurse_ts01", "/api/v1/auth/session").json()
    assert me["username"] == "nurse_ts01" and me["role"] == "clinic" and me["site"] == "TS01"
    assert "flag" in me["capabilities"] and "pdf" in me["capabilities"]
    assert "assign" not in me["capabilities"] and "template" not in me["capabilities"]
    admin = world.get("boss", "/api/v1/auth/session").json()
    assert {"assign", "cancel", "events", "template"} <= set(admin["capabilities"])
    assert admin["site"] is None
    reader = set(world.get("dr_li", "/api/v1/auth/session").json()["capabilities"])
    assert {"template", "critical", "addenda", "events", "receipt"} <= reader
    assert not reader & {"assign", "cancel"}
    assert world.get("gw_ts01", "/api/v1/auth/session").json()["capabilities"] == []


def test_every_feature_names_a_route(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    for name, (method, path) in FEATURES.items():
        assert method.lower() in paths.get(path, {}), name
