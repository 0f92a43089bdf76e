"""Views the Django tests request: each exercises one way a request can end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection, connections, transaction
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from shop.models import Order, Product

#: Filled by on_commit callbacks.
COMMITTED: list[str] = []


class Boom(Exception):
    pass


def backend_pid(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('TimeZone'), current_user")
        pid, zone, user = cursor.fetchone()
    return JsonResponse({"pid": pid, "timezone": zone, "user": user})


def setting(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [request.GET["name"]])
        return JsonResponse({"value": cursor.fetchone()[0]})


def select_one(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse(b"1")


def raises(request: HttpRequest) -> HttpResponse:
    Product.objects.create(name=request.GET["name"], price_cents=1)
    raise Boom("the view failed")


def atomic_raises(request: HttpRequest) -> HttpResponse:
    try:
        with transaction.atomic():
            Product.objects.create(name=request.GET["name"], price_cents=1)
            raise Boom("inside atomic")
    except Boom:
        pass
    return JsonResponse({"count": Product.objects.count()})


@csrf_exempt
def on_commit(request: HttpRequest) -> HttpResponse:
    name = request.GET["name"]
    with transaction.atomic():
        Product.objects.create(name=name, price_cents=1)
        transaction.on_commit(lambda: COMMITTED.append(name))
        if request.GET.get("fail"):
            raise Boom("rolled back")
    return HttpResponse(b"ok")


def savepoints(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        Product.objects.create(name="outer", price_cents=1)
        try:
            with transaction.atomic():
                Product.objects.create(name="inner", price_cents=1)
                raise Boom("inner only")
        except Boom:
            pass
        Product.objects.create(name="after", price_cents=1)
    return JsonResponse({"names": list(Product.objects.values_list("name", flat=True))})


def iterate(request: HttpRequest) -> JsonResponse:
    # A named (server-side) cursor, in autocommit mode: WITH HOLD.
    names = [p.name for p in Product.objects.order_by("id").iterator(chunk_size=2)]
    return JsonResponse({"names": names})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for i in range(3):
            with connection.cursor() as cursor:
                cursor.execute("SELECT %s::int", [i])
                yield str(cursor.fetchone()[0]).encode()

    return StreamingHttpResponse(chunks())


def two_databases(request: HttpRequest) -> JsonResponse:
    Product.objects.using("other").create(name=request.GET["name"], price_cents=2)
    pids = {}
    for alias in ("default", "other"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids[alias] = cursor.fetchone()[0]
    return JsonResponse(pids)


def place_order_atomic(request: HttpRequest) -> HttpResponse:
    """Writes, then fails: under ATOMIC_REQUESTS nothing of it stays."""
    product = Product.objects.create(name=request.GET["name"], price_cents=5, stock=1)
    Order.objects.create(product=product, quantity=1, total_cents=5)
    raise Boom("after writing")


async def async_count(request: HttpRequest) -> JsonResponse:
    count = await Product.objects.acount()
    await asyncio.sleep(0.005)  # let other requests interleave
    first = await Product.objects.order_by("id").afirst()
    return JsonResponse({"count": count, "first": first.name if first else None})


def sync_slow(request: HttpRequest) -> JsonResponse:
    count = Product.objects.count()
    time.sleep(0.005)
    return JsonResponse({"count": count})


async def async_raises(request: HttpRequest) -> HttpResponse:
    await Product.objects.acount()
    raise Boom("async view failed")


def _count_in_a_thread() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM shop_product")
        return int(cursor.fetchone()[0])


async def async_mixed(request: HttpRequest) -> JsonResponse:
    """The ORM's a* methods, and sync code run through sync_to_async, in one request."""
    count = await Product.objects.acount()
    counted = await sync_to_async(_count_in_a_thread)()
    exists = await Product.objects.filter(name="first").aexists()
    return JsonResponse({"count": count, "counted": counted, "exists": exists})


BOUND = "SELECT current_setting('statement_timeout')"


def deadline_bounds(request: HttpRequest) -> JsonResponse:
    """The statement_timeout the server applied to each kind of statement Django sends."""
    seen: dict[str, object] = {}
    with connection.cursor() as cursor:
        cursor.execute(BOUND)
        seen["cursor"] = cursor.fetchone()[0]
        cursor.execute(BOUND + " || %s", [""])
        seen["cursor_with_params"] = cursor.fetchone()[0]
        seen["logged"] = connection.ops.last_executed_query(cursor, BOUND + " || %s", [""])
    product = Product.objects.create(name=request.GET.get("name", "bound"), price_cents=1)
    seen["orm"] = (
        Product.objects.filter(pk=product.pk)
        .annotate(bound=RawSQL("current_setting('statement_timeout')", []))
        .values_list("bound", flat=True)
        .get()
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(BOUND)
        seen["atomic"] = cursor.fetchone()[0]
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")  # never bounded: the session's own
        seen["session"] = cursor.fetchone()[0]
    return JsonResponse(seen)


def deadline_sleep(request: HttpRequest) -> JsonResponse:
    """A 60 s statement under the invocation's deadline: who ends it, and when."""
    started = time.monotonic()
    try:
        if request.GET.get("atomic"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [60])
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [60])
    except DatabaseError as err:
        cause = err.__cause__
        return JsonResponse(
            {"sqlstate": getattr(cause, "sqlstate", None), "took": time.monotonic() - started}
        )
    return JsonResponse({"sqlstate": None, "took": time.monotonic() - started})


def backend_in_transaction(request: HttpRequest) -> JsonResponse:
    """Inside atomic(): writes a row, then asks a worker thread (`WORKER`) what it sees."""
    marker = request.GET["marker"]
    with transaction.atomic():
        Product.objects.create(name=marker, price_cents=1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), txid_current()")
            pid, txid = cursor.fetchone()
        assert WORKER is not None
        seen = WORKER.submit(_worker_looks, marker).result(timeout=60)
        transaction.set_rollback(True)  # the row is never committed
    return JsonResponse({"pid": pid, "txid": txid, "worker": seen})


#: The worker thread pool of `backend_in_transaction`, set by the test using it.
WORKER: ThreadPoolExecutor | None = None


def _worker_looks(marker: str) -> dict[str, object]:
    # ORM work in a worker thread, which never gives its connection back itself.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), txid_current_if_assigned()")
        pid, txid = cursor.fetchone()
    return {"pid": pid, "txid": txid, "rows": Product.objects.filter(name=marker).count()}
