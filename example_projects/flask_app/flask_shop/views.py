"""JSON endpoints: products (list, create, read, update, delete) and orders.

The same URLs, bodies and status codes as the Django example, on plain SQL.
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Blueprint, Response, jsonify, request
from psycopg.rows import dict_row

from .db import db

api = Blueprint("shop", __name__)

_FIELDS = {"name": str, "price_cents": int, "stock": int}
_PRODUCT = "id, name, price_cents, stock, updated_at"
_ORDER = "id, product_id AS product, quantity, total_cents, created_at"

JsonResult = tuple[Response, int] | Response


class BadRequest(Exception):
    pass


class OutOfStock(Exception):
    pass


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def _body(*, partial: bool) -> dict[str, Any]:
    data = request.get_json(silent=True) if request.data else {}
    if data is None:
        raise BadRequest("the body is not JSON")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    for name, kind in _FIELDS.items():
        if name in data:
            value = data[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise BadRequest(f"{name} must be a {kind.__name__}")
            if isinstance(value, int) and value < 0:
                raise BadRequest(f"{name} must not be negative")
        elif not partial and name != "stock":
            raise BadRequest(f"{name} is required")
    return data


@api.get("/health")
def health() -> JsonResult:
    with db.connection() as conn:
        row = conn.execute("SELECT 1").fetchone()
    return jsonify(database=row == (1,))


@api.route("/products", methods=["GET", "POST"])
def products() -> JsonResult:
    with db.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        if request.method == "GET":
            rows = cur.execute(f"SELECT {_PRODUCT} FROM shop_product ORDER BY id").fetchall()
            return jsonify(products=[_json(r) for r in rows])
        try:
            data = _body(partial=False)
            row = cur.execute(
                f"INSERT INTO shop_product (name, price_cents, stock)"
                f" VALUES (%(name)s, %(price_cents)s, %(stock)s) RETURNING {_PRODUCT}",
                {"stock": 0, **data},
            ).fetchone()
        except BadRequest as err:
            return _error(str(err), 400)
        except psycopg.errors.UniqueViolation:
            return _error("a product with this name exists", 409)
    assert row is not None
    return jsonify(_json(row)), 201


@api.route("/products/<int:pk>", methods=["GET", "PATCH", "DELETE"])
def product(pk: int) -> JsonResult:
    with db.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        found = cur.execute(f"SELECT {_PRODUCT} FROM shop_product WHERE id = %s", (pk,)).fetchone()
        if found is None:
            return _error("no such product", 404)
        if request.method == "GET":
            return jsonify(_json(found))
        if request.method == "DELETE":
            has_orders = cur.execute("SELECT 1 FROM shop_order WHERE product_id = %s", (pk,))
            if has_orders.fetchone() is not None:
                return _error("the product has orders", 409)
            cur.execute("DELETE FROM shop_product WHERE id = %s", (pk,))
            return Response(status=204)
        try:
            data = _body(partial=True)
            # Column names come from _FIELDS only, never from the request.
            assignments = ", ".join(f"{name} = %({name})s" for name in _FIELDS if name in data)
            row = cur.execute(
                f"UPDATE shop_product SET {assignments}, updated_at = now()"
                f" WHERE id = %(id)s RETURNING {_PRODUCT}",
                {**data, "id": pk},
            ).fetchone()
        except BadRequest as err:
            return _error(str(err), 400)
        except psycopg.errors.UniqueViolation:
            return _error("a product with this name exists", 409)
    return jsonify(_json(row or found))


@api.route("/orders", methods=["GET", "POST"])
def orders() -> JsonResult:
    """GET lists orders; POST ``{"product": id, "quantity": n}`` places one.

    Placing an order touches two tables in one transaction: the product's stock is
    locked (``SELECT ... FOR UPDATE``) and lowered, and the order is inserted; when the
    stock is short, neither happens.
    """
    if request.method == "GET":
        with db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(f"SELECT {_ORDER} FROM shop_order ORDER BY id").fetchall()
        return jsonify(orders=[_json(r) for r in rows])
    data = request.get_json(silent=True)
    try:
        product_id, quantity = int(data["product"]), int(data["quantity"])  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        return _error('expected {"product": id, "quantity": n}', 400)
    if quantity < 1:
        return _error("quantity must be at least 1", 400)
    try:
        with db.transaction() as conn:
            cur = conn.cursor(row_factory=dict_row)
            item = cur.execute(
                "SELECT stock, price_cents FROM shop_product WHERE id = %s FOR UPDATE",
                (product_id,),
            ).fetchone()
            if item is None:
                return _error("no such product", 404)
            if item["stock"] < quantity:
                raise OutOfStock
            cur.execute(
                "UPDATE shop_product SET stock = stock - %s, updated_at = now() WHERE id = %s",
                (quantity, product_id),
            )
            order = cur.execute(
                f"INSERT INTO shop_order (product_id, quantity, total_cents)"
                f" VALUES (%s, %s, %s) RETURNING {_ORDER}",
                (product_id, quantity, quantity * item["price_cents"]),
            ).fetchone()
    except OutOfStock:
        return _error("not enough stock", 409)
    assert order is not None
    return jsonify(_json(order)), 201
