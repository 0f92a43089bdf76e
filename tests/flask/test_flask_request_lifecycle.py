"""One connection per app context: borrowed lazily, released at teardown whatever happens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask, abort, stream_with_context
from flask_serverless_pool import EXTENSION_KEY, PoolState, ServerlessPool

from serverless_pool import PoolTimeout
from serverless_pool.testing.postgres import PostgresServer

MakeApp = Callable[..., tuple[Flask, ServerlessPool]]


def in_use(app: Flask, db: ServerlessPool) -> int:
    return db.get_pool(app).stats()["pool_in_use"]


def test_direct_and_factory_registration_keep_state_in_app_extensions(make_app: MakeApp) -> None:
    app, db = make_app()
    state = app.extensions[EXTENSION_KEY]
    assert isinstance(state, PoolState)
    assert state.extension is db
    assert state.pool is db.get_pool(app)

    direct = Flask("direct_style")
    direct.config["SERVERLESS_POOL_DATABASE_URL"] = app.config["SERVERLESS_POOL_DATABASE_URL"]
    direct_db = ServerlessPool(direct)
    try:
        assert direct.extensions[EXTENSION_KEY].extension is direct_db
    finally:
        direct_db.get_pool(direct).close()


def test_a_second_init_app_on_the_same_app_is_refused(make_app: MakeApp) -> None:
    app, _ = make_app()
    with pytest.raises(RuntimeError, match="already registered"):
        ServerlessPool().init_app(app)


def test_pool_is_named_after_the_app_unless_configured(make_app: MakeApp) -> None:
    app, db = make_app()
    assert db.get_pool(app).name == app.name
    named, named_db = make_app(SERVERLESS_POOL_NAME="orders")
    assert named_db.get_pool(named).name == "orders"


def test_a_request_that_never_touches_the_database_borrows_nothing(make_app: MakeApp) -> None:
    app, db = make_app()

    @app.route("/")
    def index() -> str:
        return "no database"

    assert app.test_client().get("/").status_code == 200
    stats = db.get_pool(app).stats()
    assert stats.get("borrows", 0) == 0
    assert stats.get("connections_opened", 0) == 0


def test_nested_and_repeated_use_in_one_request_share_one_connection(make_app: MakeApp) -> None:
    app, db = make_app()

    @app.route("/")
    def index() -> dict[str, object]:
        with db.connection() as outer:
            with db.connection() as inner:
                same_nested = inner is outer
            pid = outer.execute("SELECT pg_backend_pid()").fetchone()
        with db.connection() as again:
            pid_again = again.execute("SELECT pg_backend_pid()").fetchone()
            same_again = again is outer
        return {"nested": same_nested, "again": same_again, "pids": pid == pid_again}

    response = app.test_client().get("/")
    assert response.json == {"nested": True, "again": True, "pids": True}
    stats = db.get_pool(app).stats()
    assert stats["borrows"] == 1
    assert stats["pool_in_use"] == 0


def test_the_connection_is_held_until_the_request_ends(make_app: MakeApp) -> None:
    app, db = make_app()
    seen: list[int] = []

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            conn.execute("SELECT 1")
        seen.append(in_use(app, db))  # after the with block, still this request's
        return "ok"

    app.test_client().get("/")
    assert seen == [1]
    assert in_use(app, db) == 0


def test_a_view_that_raises_still_releases_its_connection(make_app: MakeApp) -> None:
    app, db = make_app(TESTING=False)

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            conn.execute("SELECT 1")
        raise ValueError("boom")

    response = app.test_client().get("/")
    assert response.status_code == 500
    assert in_use(app, db) == 0


def test_an_exception_propagated_to_the_caller_still_releases(make_app: MakeApp) -> None:
    app, db = make_app(TESTING=False, PROPAGATE_EXCEPTIONS=True)

    @app.route("/")
    def index() -> str:
        db.get_connection().execute("SELECT 1")
        raise KeyError("propagated")

    with pytest.raises(KeyError, match="propagated"):
        app.test_client().get("/")
    assert in_use(app, db) == 0


def test_abort_releases_the_connection(make_app: MakeApp) -> None:
    app, db = make_app()

    @app.route("/<int:number>")
    def item(number: int) -> str:
        with db.connection() as conn:
            row = conn.execute("SELECT %s::int WHERE %s::int < 10", (number, number)).fetchone()
        if row is None:
            abort(404)
        return str(row[0])

    client = app.test_client()
    assert client.get("/3").text == "3"
    assert client.get("/30").status_code == 404
    assert in_use(app, db) == 0
    assert db.get_pool(app).stats()["borrows"] == 2


def test_a_streamed_response_keeps_its_connection_until_the_stream_ends(
    make_app: MakeApp,
) -> None:
    app, db = make_app()
    during: list[int] = []

    @app.route("/stream")
    def stream() -> Iterator[str]:
        def rows() -> Iterator[str]:
            with db.connection() as conn:
                for (n,) in conn.execute("SELECT generate_series(1, 3)"):
                    during.append(in_use(app, db))
                    yield f"{n}\n"

        return stream_with_context(rows())

    response = app.test_client().get("/stream", buffered=False)
    body = b"".join(response.response).decode()  # type: ignore[arg-type]
    assert body == "1\n2\n3\n"
    assert during == [1, 1, 1]
    response.close()
    assert in_use(app, db) == 0


def test_a_stream_that_raises_midway_still_releases(make_app: MakeApp) -> None:
    app, db = make_app()

    @app.route("/stream")
    def stream() -> Iterator[str]:
        def rows() -> Iterator[str]:
            with db.connection() as conn:
                conn.execute("SELECT 1")
            yield "first\n"
            raise RuntimeError("stream broke")

        return stream_with_context(rows())

    response = app.test_client().get("/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"first\n"
    with pytest.raises(RuntimeError, match="stream broke"):
        next(chunks)
    response.close()
    assert in_use(app, db) == 0


def test_use_outside_an_app_context_is_a_clear_error(make_app: MakeApp) -> None:
    _, db = make_app()
    with pytest.raises(RuntimeError, match="needs an application context"), db.connection():
        pass
    with pytest.raises(RuntimeError, match="needs an application context"):
        db.transaction().__enter__()


def test_an_app_context_outside_requests_gets_a_connection_released_at_its_end(
    make_app: MakeApp,
) -> None:
    app, db = make_app()
    with app.app_context():
        with db.connection() as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
        assert in_use(app, db) == 1
    assert in_use(app, db) == 0


def test_an_extension_not_registered_on_the_current_app_says_so(make_app: MakeApp) -> None:
    app, _ = make_app()
    stranger = ServerlessPool()
    with app.app_context(), pytest.raises(RuntimeError, match="not registered on the app"):
        stranger.get_connection()


def test_sequential_requests_reuse_the_pooled_connection(make_app: MakeApp) -> None:
    app, db = make_app()

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return str(row[0])

    client = app.test_client()
    pids = {client.get("/").text for _ in range(5)}
    assert len(pids) == 1
    assert db.get_pool(app).stats()["connections_opened"] == 1


def test_repr_of_the_extension_and_pool_shows_no_password(make_app: MakeApp) -> None:
    app, db = make_app()
    assert "app-secret" not in repr(db)
    assert "app-secret" not in repr(db.get_pool(app))
    assert "app-secret" not in repr(app.extensions[EXTENSION_KEY])


def test_password_callable_and_configure_callback_apply_to_new_connections(
    postgres: PostgresServer, app_name: str
) -> None:
    fetched: list[int] = []
    configured: list[int] = []

    def password() -> str:
        fetched.append(1)
        return "app-secret"

    db = ServerlessPool(
        password=password, configure=lambda c: configured.append(c.info.backend_pid)
    )
    app = Flask("flask_password_callable")
    app.config["SERVERLESS_POOL_DATABASE_URL"] = postgres.conninfo(password=None)
    app.config["SERVERLESS_POOL_APPLICATION_NAME"] = app_name
    db.init_app(app)

    @app.route("/")
    def index() -> str:
        with db.connection() as conn:
            return str(conn.info.backend_pid)

    try:
        pid = app.test_client().get("/").text
        assert app.test_client().get("/").text == pid
    finally:
        db.get_pool(app).close()
    assert fetched == [1]
    assert configured == [int(pid)]


def test_a_full_pool_times_out_with_a_clear_error_and_recovers(make_app: MakeApp) -> None:
    app, db = make_app(SERVERLESS_POOL_MAX_SIZE=1, SERVERLESS_POOL_NAME="tiny")
    pool = db.get_pool(app)
    outside = pool.acquire()  # another thread of the instance holds the only connection
    try:
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(PoolTimeout, match="the pool 'tiny' had no free connection"):
                db.get_connection(timeout=0.2)
            assert time.monotonic() - started < 5
    finally:
        pool.release(outside)
    with app.app_context(), db.connection(timeout=1) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats()["pool_in_use"] == 0
