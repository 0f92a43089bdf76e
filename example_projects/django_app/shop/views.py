"""JSON endpoints: products (list, create, read, update, delete) and orders."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from .models import Order, Product

_FIELDS = {"name": str, "price_cents": int, "stock": int}


class BadRequest(Exception):
    pass


def _body(request: HttpRequest, *, partial: bool) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise BadRequest("the body is not JSON") from None
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
            if kind is int and value < 0:
                raise BadRequest(f"{name} must not be negative")
        elif not partial and name != "stock":
            raise BadRequest(f"{name} is required")
    return data


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return JsonResponse({"database": one == 1})


@csrf_exempt
@require_http_methods(["GET", "POST"])
def products(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse({"products": [p.as_json() for p in Product.objects.all()]})
    try:
        data = _body(request, partial=False)
        product = Product.objects.create(**data)
    except BadRequest as err:
        return _error(str(err), 400)
    except IntegrityError:
        return _error("a product with this name exists", 409)
    return JsonResponse(product.as_json(), status=201)


@csrf_exempt
@require_http_methods(["GET", "PATCH", "DELETE"])
def product(request: HttpRequest, pk: int) -> HttpResponse:
    found = Product.objects.filter(pk=pk).first()
    if found is None:
        return _error("no such product", 404)
    if request.method == "GET":
        return JsonResponse(found.as_json())
    if request.method == "DELETE":
        if found.orders.exists():
            return _error("the product has orders", 409)
        found.delete()
        return HttpResponse(status=204)
    try:
        data = _body(request, partial=True)
    except BadRequest as err:
        return _error(str(err), 400)
    for name, value in data.items():
        setattr(found, name, value)
    try:
        found.save()
    except IntegrityError:
        return _error("a product with this name exists", 409)
    return JsonResponse(found.as_json())


class OutOfStock(Exception):
    pass


@csrf_exempt
@require_http_methods(["GET", "POST"])
def orders(request: HttpRequest) -> HttpResponse:
    """GET lists orders; POST ``{"product": id, "quantity": n}`` places one.

    Placing an order touches two tables in one transaction: the product's stock is
    locked (``SELECT ... FOR UPDATE``) and lowered, and the order is inserted; when the
    stock is short, neither happens.
    """
    if request.method == "GET":
        return JsonResponse({"orders": [o.as_json() for o in Order.objects.all()]})
    try:
        data = json.loads(request.body or b"{}")
        product_id, quantity = int(data["product"]), int(data["quantity"])
    except (ValueError, KeyError, TypeError):
        return _error('expected {"product": id, "quantity": n}', 400)
    if quantity < 1:
        return _error("quantity must be at least 1", 400)
    try:
        with transaction.atomic():
            item = Product.objects.select_for_update().filter(pk=product_id).first()
            if item is None:
                return _error("no such product", 404)
            if item.stock < quantity:
                raise OutOfStock
            item.stock -= quantity
            item.save(update_fields=["stock", "updated_at"])
            order = Order.objects.create(
                product=item, quantity=quantity, total_cents=quantity * item.price_cents
            )
    except OutOfStock:
        return _error("not enough stock", 409)
    return JsonResponse(order.as_json(), status=201)
