"""The Flask example project (example_projects/flask_app): the shop API on a real server."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from serverless_pool.testing.postgres import PostgresServer

PROJECT = Path(__file__).resolve().parents[2] / "example_projects" / "flask_app"
DATABASE = "flask_shop_example"


@pytest.fixture(scope="module")
def shop() -> Iterator[ModuleType]:
    """The example's package, imported the way Lambda imports it (project dir on the path)."""
    sys.path.insert(0, str(PROJECT))
    try:
        yield importlib.import_module("flask_shop")
    finally:
        sys.path.remove(str(PROJECT))
        for name in [m for m in sys.modules if m == "flask_shop" or m.startswith("flask_shop.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def database_url(postgres: PostgresServer) -> Iterator[str]:
    postgres.execute(f"CREATE DATABASE {DATABASE} OWNER app")
    yield postgres.conninfo(dbname=DATABASE)
    postgres.execute(f"DROP DATABASE {DATABASE} WITH (FORCE)")


@pytest.fixture(scope="module")
def app(shop: ModuleType, database_url: str) -> Iterator[Flask]:
    app: Flask = shop.create_app(
        {
            "TESTING": True,
            "SERVERLESS_POOL_DATABASE_URL": database_url,
            "SERVERLESS_POOL_APPLICATION_NAME": "flask-shop-test",
        }
    )
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    yield app
    shop.db.get_pool(app).close()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    yield app.test_client()
    assert app.extensions["serverless_pool"].pool.stats()["pool_in_use"] == 0


def new_product(client: FlaskClient, name: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/products", json={"name": name, "price_cents": 250, **fields})
    assert response.status_code == 201, response.json
    body = response.json
    assert isinstance(body, dict)
    return body


def test_init_db_is_safe_to_run_again(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0
    assert "shop_product and shop_order are ready" in result.output


def test_health_runs_a_query(client: FlaskClient) -> None:
    assert client.get("/health").json == {"database": True}


def test_products_can_be_created_listed_read_updated_and_deleted(client: FlaskClient) -> None:
    made = new_product(client, "kettle", stock=3)
    assert {k: made[k] for k in ("name", "price_cents", "stock")} == {
        "name": "kettle",
        "price_cents": 250,
        "stock": 3,
    }
    listed = client.get("/products").json
    assert isinstance(listed, dict)
    assert made in listed["products"]
    assert client.get(f"/products/{made['id']}").json == made
    patched = client.patch(f"/products/{made['id']}", json={"price_cents": 300})
    assert patched.status_code == 200
    assert patched.json is not None
    assert patched.json["price_cents"] == 300
    assert client.delete(f"/products/{made['id']}").status_code == 204
    assert client.get(f"/products/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"price_cents": 1}, "name is required"),
        ({"name": "x", "price_cents": -1}, "price_cents must not be negative"),
        ({"name": "x", "price_cents": "1"}, "price_cents must be a int"),
        ({"name": "x", "price_cents": 1, "colour": "red"}, "unknown field(s): colour"),
        ([1, 2], "the body must be a JSON object"),
    ],
)
def test_invalid_product_bodies_are_refused(client: FlaskClient, body: Any, error: str) -> None:
    response = client.post("/products", json=body)
    assert response.status_code == 400
    assert response.json == {"error": error}


def test_duplicate_names_conflict_and_the_connection_stays_usable(client: FlaskClient) -> None:
    new_product(client, "teapot")
    assert client.post("/products", json={"name": "teapot", "price_cents": 1}).status_code == 409
    cup = new_product(client, "cup")
    renamed = client.patch(f"/products/{cup['id']}", json={"name": "teapot"})
    assert renamed.status_code == 409
    assert client.get(f"/products/{cup['id']}").json == cup


def test_an_order_lowers_the_stock_in_the_same_transaction(client: FlaskClient) -> None:
    lamp = new_product(client, "lamp", stock=5, price_cents=1999)
    response = client.post("/orders", json={"product": lamp["id"], "quantity": 2})
    assert response.status_code == 201
    order = response.json
    assert order is not None
    assert (order["product"], order["quantity"], order["total_cents"]) == (lamp["id"], 2, 3998)
    assert client.get(f"/products/{lamp['id']}").json["stock"] == 3  # type: ignore[index]
    listed = client.get("/orders").json
    assert listed is not None
    assert order in listed["orders"]


def test_an_order_beyond_the_stock_changes_nothing(client: FlaskClient) -> None:
    desk = new_product(client, "desk", stock=1)
    orders_before = client.get("/orders").json
    response = client.post("/orders", json={"product": desk["id"], "quantity": 2})
    assert response.status_code == 409
    assert response.json == {"error": "not enough stock"}
    assert client.get(f"/products/{desk['id']}").json == desk
    assert client.get("/orders").json == orders_before


def test_orders_for_unknown_products_or_bad_bodies_are_refused(client: FlaskClient) -> None:
    assert client.post("/orders", json={"product": 999999, "quantity": 1}).status_code == 404
    assert client.post("/orders", json={"product": 1}).status_code == 400
    assert client.post("/orders", json={"product": 1, "quantity": 0}).status_code == 400


def test_a_product_with_orders_cannot_be_deleted(client: FlaskClient) -> None:
    chair = new_product(client, "chair", stock=2)
    assert client.post("/orders", json={"product": chair["id"], "quantity": 1}).status_code == 201
    response = client.delete(f"/products/{chair['id']}")
    assert response.status_code == 409
    assert response.json == {"error": "the product has orders"}


def test_the_wsgi_module_reads_its_settings_from_the_environment(
    shop: ModuleType, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVERLESS_POOL_DATABASE_URL", database_url)
    monkeypatch.setenv("SERVERLESS_POOL_MAX_SIZE", "2")
    monkeypatch.delitem(sys.modules, "flask_shop.wsgi", raising=False)
    wsgi = importlib.import_module("flask_shop.wsgi")
    try:
        assert wsgi.app.extensions["serverless_pool"].pool.settings.max_size == 2
        assert wsgi.app.test_client().get("/health").json == {"database": True}
    finally:
        shop.db.get_pool(wsgi.app).close()


def test_the_cli_group_works_from_the_flask_command(database_url: str) -> None:
    env = {**os.environ, "SERVERLESS_POOL_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "flask_shop", "serverless-pool", "check"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "    max_connections             100" in result.stdout
    assert "app-secret" not in result.stdout + result.stderr
