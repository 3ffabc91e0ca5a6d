"""The web API and browser UI: a thin FastAPI shell over `cartridge.serving`.

Every bot move is a search whose network calls go to Triton. Requests are stateless,
so replicas behind a load balancer need no shared session. Failures of the servers
behind the app become JSON answers with a reason: Triton down is a 503 with
Retry-After, a game without a champion is a 409, bad input is a 4xx.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from cartridge.games import GAME_NAMES, load
from cartridge.names import triton_model_name
from cartridge.serving import bot
from cartridge.serving.triton import (
    ModelUnavailable,
    ServedDiscounts,
    TritonControl,
    TritonUnavailable,
)
from cartridge.web.metrics import WebMetrics
from cartridge.web.shared import SharedAnswers

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
GameName = Literal[GAME_NAMES]  # the engines' names, one Literal value each


def _whole_number(value: Any) -> Any:
    """JSON Schema, and so the OpenAPI spec, counts 3.0 as an integer: the API takes it
    as 3. Anything else (3.5, "3", true) still meets the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The bounds go before the validator, so the spec states them as minimum/maximum.
Action = Annotated[StrictInt, Field(ge=0, le=255), BeforeValidator(_whole_number)]


class WebSettings(BaseModel):
    """Where the app finds Triton and MLflow; `from_env` reads what `cartridge stack env`
    exports (CARTRIDGE_TRITON_URL, CARTRIDGE_TRITON_GRPC_URL, MLFLOW_TRACKING_URI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    triton_url: str = "http://127.0.0.1:8000"
    triton_grpc_url: str | None = "127.0.0.1:8001"
    triton_timeout: float = Field(5.0, gt=0)
    tracking_uri: str | None = None
    max_body_bytes: int = Field(16 * 1024, ge=256)
    retry_after_seconds: int = Field(5, ge=1)
    # Moves being searched or waiting for a worker thread at once; past it, a move is
    # answered 503 with Retry-After at once, so latency stays bounded under overload
    # instead of every client waiting in one growing queue.
    max_pending_moves: int = Field(64, ge=1)
    busy_retry_after_seconds: int = Field(1, ge=1)
    stats_cache_seconds: float = Field(10.0, ge=0)
    # What Triton serves follows the registry's `champion` aliases: a pass this often
    # (0: no reconciling here, e.g. where a reconciler Deployment does it).
    reconcile_seconds: float = Field(30.0, ge=0)
    # MLflow's webhook deliveries are checked against this secret; without one the
    # webhook route answers 404 and only the periodic pass follows the registry.
    webhook_secret: str | None = Field(None, repr=False)
    webhook_url: str | None = None  # where MLflow reaches this app's webhook route

    @classmethod
    def from_env(cls, **overrides) -> WebSettings:
        values = {
            "triton_url": os.environ.get("CARTRIDGE_TRITON_URL"),
            "triton_grpc_url": os.environ.get("CARTRIDGE_TRITON_GRPC_URL"),
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI"),
            "reconcile_seconds": os.environ.get("CARTRIDGE_RECONCILE_SECONDS"),
            "webhook_secret": os.environ.get("CARTRIDGE_WEBHOOK_SECRET"),
            "webhook_url": os.environ.get("CARTRIDGE_WEBHOOK_URL"),
            "max_pending_moves": os.environ.get("CARTRIDGE_MAX_PENDING_MOVES"),
        }
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})


class StateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    game: GameName
    moves: list[Action] = Field(default_factory=list, max_length=128)


class MoveRequest(StateRequest):
    level: Annotated[StrictInt, Field(ge=1, le=bot.MAX_LEVEL), BeforeValidator(_whole_number)] = (
        bot.DEFAULT_LEVEL
    )


class MoveReply(BaseModel):
    bot_move: int | None
    policy: list[float]
    value: float
    model_version: str | None
    position: bot.Position


class ErrorReply(BaseModel):
    """Every error answer: what went wrong, in a sentence."""

    detail: str


class InvalidRequestReply(ErrorReply):
    """A request that failed validation: the sentence, and pydantic's entries."""

    errors: list[dict[str, Any]] = []


_ERROR_MEANINGS = {
    400: "Illegal moves, or a move after the end of the game.",
    401: "The delivery's signature is missing or wrong.",
    404: "No such game, or webhooks are not enabled here.",
    409: "The game has no champion yet.",
    413: "The body is larger than the limit.",
    422: "A body that is not JSON, wrong types, an unknown game or out-of-range values.",
    503: "Triton or MLflow does not answer, or too many moves are pending: "
    "retry after Retry-After seconds.",
}


FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route gives, with their body models."""
    return {
        code: {
            "model": InvalidRequestReply if code == 422 else ErrorReply,
            "description": _ERROR_MEANINGS[code],
        }
        for code in codes
    }


class ServiceUnavailable(Exception):
    """A server behind the app (`service`: triton or mlflow) does not answer."""

    def __init__(self, service: str, message: str):
        super().__init__(message)
        self.service = service


class NoChampion(Exception):
    """The game has no model to serve yet."""


def _error_text(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({item.get('ctx', {}).get('error')})")
            continue
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(parts)


class BodyLimit:
    """Answer 413 for bodies over `limit` bytes, whether or not Content-Length is sent,
    before anything parses them. A streamed body that grows too large is answered at
    once and the app sees a disconnect, whose own reply is dropped."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(scope, receive, send)
        seen = 0
        rejected = False

        async def counted():
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    rejected = True
                    await self._reject(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def unless_rejected(message):
            if not rejected:
                await send(message)

        await self.app(scope, counted, unless_rejected)

    async def _reject(self, scope, receive, send):
        response = JSONResponse(
            {"detail": f"request body is larger than {self.limit} bytes"}, status_code=413
        )
        await response(scope, receive, send)


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings.from_env()
    _answer_quickly_from_mlflow()
    metrics = WebMetrics()
    evaluators: dict[str, object] = {}
    evaluators_lock = threading.Lock()

    reconciler = make_reconciler(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if reconciler is not None:
            reconciler.start()
        yield
        if reconciler is not None:
            reconciler.stop()
        # Shutdown: let each batcher finish its queued calls and stop its threads.
        with evaluators_lock:
            for evaluator in evaluators.values():
                evaluator.close()
            evaluators.clear()

    app = FastAPI(
        title="Cartridge",
        summary="Play the AlphaZero champions served by Triton; inspect their lineage.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.control = TritonControl(settings.triton_url, timeout=settings.triton_timeout)
    app.state.discounts = ServedDiscounts(app.state.control)
    app.state.reconciler = reconciler
    # Lineage changes with a promotion, so it is only shared while being fetched;
    # training curves change slowly and are reused for a while.
    lineages: SharedAnswers[dict | None] = SharedAnswers()
    training_curves: SharedAnswers[dict] = SharedAnswers(settings.stats_cache_seconds)

    def evaluator_for(game_name: str):
        """One Triton evaluator per game behind a batcher: the searches of concurrent
        requests share calls (see `BatchingEvaluator`)."""
        from cartridge.evaluators.batching import BatchingEvaluator
        from cartridge.evaluators.triton_model import TritonEvaluator

        with evaluators_lock:
            if game_name not in evaluators:
                grpc = settings.triton_grpc_url

                def observe(seconds: float, batch: int) -> None:
                    metrics.triton_latency.labels(game_name).observe(seconds)
                    metrics.positions.labels(game_name).inc(batch)

                evaluators[game_name] = BatchingEvaluator(
                    TritonEvaluator(
                        load(game_name),
                        grpc or settings.triton_url,
                        protocol="grpc" if grpc else "http",
                        timeout=settings.triton_timeout,
                        on_call=observe,
                    )
                )
            return evaluators[game_name]

    def mlflow_client():
        from mlflow.tracking import MlflowClient

        if not settings.tracking_uri:
            raise ServiceUnavailable("mlflow", "no MLflow is configured (set MLFLOW_TRACKING_URI)")
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    def ask_mlflow(function, *args):
        from mlflow.exceptions import MlflowException

        try:
            return function(mlflow_client(), *args)
        except MlflowException as error:
            if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code):
                raise
            reason = f"MLflow is not reachable: {error.message}"
            raise ServiceUnavailable("mlflow", reason) from error
        except OSError as error:
            raise ServiceUnavailable("mlflow", f"MLflow is not reachable: {error}") from error

    pending_moves = 0  # changed on the event loop only: no lock needed

    @app.middleware("http")
    async def admit(request: Request, call_next):
        """Shed moves past `max_pending_moves` before they queue for a worker thread."""
        nonlocal pending_moves
        if request.url.path != "/api/move" or request.method != "POST":
            return await call_next(request)
        if pending_moves >= settings.max_pending_moves:
            metrics.errors.labels("overloaded").inc()
            return JSONResponse(
                {"detail": f"busy: {pending_moves} moves are being searched; retry shortly"},
                status_code=503,
                headers={"Retry-After": str(settings.busy_retry_after_seconds)},
            )
        pending_moves += 1
        metrics.pending_moves.inc()
        try:
            return await call_next(request)
        finally:
            pending_moves -= 1
            metrics.pending_moves.dec()

    @app.middleware("http")
    async def record(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        label = getattr(route, "path", "unmatched")
        metrics.requests.labels(label, request.method, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        metrics.errors.labels("bad_request").inc()
        return JSONResponse(
            {"detail": _error_text(error), "errors": _plain(error.errors())}, status_code=422
        )

    @app.exception_handler(bot.IllegalMoves)
    async def illegal(request: Request, error: bot.IllegalMoves):
        metrics.errors.labels("bad_request").inc()
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, error: ServiceUnavailable):
        metrics.errors.labels(f"{error.service}_unavailable").inc()
        return JSONResponse(
            {"detail": str(error)},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )

    @app.exception_handler(NoChampion)
    async def no_champion(request: Request, error: NoChampion):
        metrics.errors.labels("no_champion").inc()
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 400 and error.detail == FASTAPI_UNPARSABLE_BODY:
            # FastAPI's own answer for a body json cannot take at all (nesting too
            # deep): bad JSON like any other, so the same 422 and model.
            metrics.errors.labels("bad_request").inc()
            return JSONResponse(
                {"detail": "request body is not valid JSON (it could not be parsed)"},
                status_code=422,
            )
        return JSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        metrics.errors.labels("internal").inc()
        log.error("internal error on %s", request.url.path, exc_info=error)
        return JSONResponse(
            {"detail": f"internal error ({type(error).__name__}); the web app's log has it"},
            status_code=500,
        )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses=error_responses(503))
    def readyz() -> JSONResponse:
        """Triton and MLflow answer (readiness): 200, else 503 naming what is down."""
        triton = app.state.control.ready()
        mlflow_ok = _mlflow_healthy(settings.tracking_uri)
        body = {"triton": triton, "mlflow": mlflow_ok}
        if triton and mlflow_ok:
            return JSONResponse({"status": "ready", **body})
        down = [name for name, ok in body.items() if not ok]
        return JSONResponse(
            {"status": "not ready", "detail": f"not reachable: {', '.join(down)}", **body},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )

    add_metrics_route(app, metrics, reconciler)

    add_webhook_route(app, settings, reconciler, metrics)

    @app.get("/api/games", tags=["games"])
    def games() -> dict:
        """Every game: board size, actions, players and rules."""
        return {"games": [bot.game_info(load(name)) for name in GAME_NAMES]}

    @app.get("/api/games/{game}", tags=["games"], responses=error_responses(404, 422))
    def game(game: str) -> dict:
        """One game's board size, action numbering, players and rules."""
        if game not in GAME_NAMES:
            raise StarletteHTTPException(
                404, f"unknown game {game!r}; choose one of {', '.join(GAME_NAMES)}"
            )
        return bot.game_info(load(game))

    @app.post("/api/state", tags=["play"], responses=error_responses(400, 413, 422))
    def state(request: StateRequest) -> bot.Position:
        """Replay and validate the moves; the board, legal actions and result after them."""
        return bot.position(request.game, request.moves)

    @app.post("/api/move", tags=["play"], responses=error_responses(400, 409, 413, 422, 503))
    def move(request: MoveRequest) -> MoveReply:
        """The champion's reply to the position after `moves`: a search of `level`
        simulations whose network calls go to Triton."""
        evaluator = evaluator_for(request.game)
        for attempt in (1, 2):
            try:
                discount = app.state.discounts.get(request.game)
                reply = bot.reply(request.game, request.moves, request.level, evaluator, discount)
                break
            except (TritonUnavailable, TimeoutError) as error:
                raise ServiceUnavailable("triton", f"Triton is not reachable: {error}") from error
            except ModelUnavailable as error:
                if attempt == 2:
                    raise NoChampion(_no_champion_text(request.game)) from error
                _load_model(app.state.control, request.game)
        return MoveReply(
            bot_move=reply.bot_move,
            policy=reply.policy,
            value=reply.value,
            model_version=evaluator.last_version,
            position=reply.position,
        )

    @app.get("/api/model/{game}", tags=["model"], responses=error_responses(422, 503))
    def model(game: GameName) -> dict:
        """The champion's lineage: registry version, promotion time, arena results, the
        MLflow run and parameters, and the version Triton serves. `champion` is null
        while the game has none."""
        from cartridge.serving.lineage import champion_lineage

        ui = _ui_url(settings.tracking_uri)
        lineage = lineages.get(game, lambda: ask_mlflow(champion_lineage, game, ui))
        if lineage is not None:
            lineage = dict(lineage)  # each request adds its own Triton state
            lineage["triton"] = _triton_state(app.state.control, game)
            # The registry's champion and what Triton serves can differ for a moment
            # (until the next reconcile pass) or for good (a refused version).
            lineage["in_sync"] = lineage["triton"]["version"] == lineage["version"]
        return {"game": game, "champion": lineage}

    @app.get("/api/stats/{game}", tags=["model"], responses=error_responses(422, 503))
    def stats(game: GameName) -> dict:
        """Training curves (losses by cumulative step) and arena results by version."""
        from cartridge.serving.lineage import training_stats

        return training_curves.get(game, lambda: ask_mlflow(training_stats, game))

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="ui")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _answer_quickly_from_mlflow() -> None:
    """MLflow's client retries for minutes by default; a request needs an answer now."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def add_metrics_route(app: FastAPI, metrics: WebMetrics, reconciler=None) -> None:
    """GET /metrics: the app's own Prometheus registry, with the serving state of the
    reconciler's latest passes where this app runs one."""

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if reconciler is not None:
            metrics.record_serving(list(reconciler.last.values()))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def make_reconciler(settings: WebSettings):
    """The reconciler these settings ask for, or None (no period, or no MLflow)."""
    if not (settings.reconcile_seconds and settings.tracking_uri):
        return None
    from cartridge.serving.reconcile import Reconciler

    return Reconciler(
        settings.tracking_uri,
        settings.triton_url,
        period=settings.reconcile_seconds,
        webhook_url=settings.webhook_url,
        webhook_secret=settings.webhook_secret,
        timeout=settings.triton_timeout,
    )


def add_webhook_route(app: FastAPI, settings: WebSettings, reconciler, metrics) -> None:
    """POST /api/webhooks/mlflow, answered by the web app and the reconciler alike."""

    @app.post(
        "/api/webhooks/mlflow",
        tags=["operations"],
        status_code=202,
        responses=error_responses(401, 404, 413),
    )
    async def mlflow_webhook(request: Request) -> dict:
        """MLflow's registry webhook: a `champion` alias moved, so serving follows now
        rather than at the next periodic pass. Deliveries must carry a valid
        `X-MLflow-Signature` (HMAC-SHA256 with the shared secret); others get 401."""
        from cartridge.serving.webhooks import BadSignature, game_of_event, verify

        if not settings.webhook_secret or reconciler is None:
            raise StarletteHTTPException(404, "webhooks are not enabled on this server")
        body = await request.body()
        try:
            verify(settings.webhook_secret, request.headers, body)
        except BadSignature as error:
            metrics.errors.labels("bad_signature").inc()
            raise StarletteHTTPException(401, f"refused: {error}") from None
        game_name = game_of_event(body)
        metrics.webhooks.labels(game_name or "").inc()
        if game_name is not None:
            reconciler.trigger(game_name)
        return {"accepted": True, "game": game_name}


def create_reconciler_app(settings: WebSettings | None = None) -> FastAPI:
    """The reconciler on its own (`cartridge reconcile --serve`), as a cluster runs it:
    its passes, the webhook route, health and metrics, and nothing of the game API."""
    settings = settings or WebSettings.from_env()
    _answer_quickly_from_mlflow()
    reconciler = make_reconciler(settings)
    if reconciler is None:
        raise ValueError(
            "the reconciler needs MLFLOW_TRACKING_URI and a CARTRIDGE_RECONCILE_SECONDS above 0"
        )
    metrics = WebMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        reconciler.start()
        yield
        reconciler.stop()

    app = FastAPI(title="Cartridge reconciler", version=_version(), lifespan=lifespan)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        """The reconcile loop is running (liveness)."""
        alive = reconciler.alive
        body = {"status": "ok" if alive else "stopped"}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/api/serving", tags=["operations"])
    def serving() -> dict:
        """Each game's latest pass: the registry's champion, what Triton serves, why not."""
        return {game: outcome.model_dump() for game, outcome in sorted(reconciler.last.items())}

    add_metrics_route(app, metrics, reconciler)

    add_webhook_route(app, settings, reconciler, metrics)
    return app


def _load_model(control: TritonControl, game_name: str) -> None:
    """Load a published model Triton is not serving yet (a server started before the
    first promotion, or one whose load was missed); NoChampion if none is published,
    ServiceUnavailable (with Triton's reason) if one is but fails to load."""
    try:
        control.load(game_name)
    except TritonUnavailable as error:
        raise ServiceUnavailable("triton", f"Triton is not reachable: {error}") from error
    except ModelUnavailable as error:
        try:
            published = control.model_state(game_name).version is not None
        except (TritonUnavailable, ModelUnavailable):
            published = False
        if not published:
            raise NoChampion(_no_champion_text(game_name)) from error
        reason = f"Triton could not load the champion: {error}"
        raise ServiceUnavailable("triton", reason) from error


def _no_champion_text(game_name: str) -> str:
    return (
        f"{game_name} has no champion yet: train one with `cartridge pipeline run --local "
        f"--game {game_name}`"
    )


def _triton_state(control: TritonControl, game_name: str) -> dict:
    try:
        state = control.model_state(game_name)
        return {"model": state.model, "version": state.version, "state": state.state}
    except (TritonUnavailable, ModelUnavailable) as error:
        return {
            "model": triton_model_name(game_name),
            "version": None,
            "state": None,
            "error": str(error),
        }


def _mlflow_healthy(tracking_uri: str | None) -> bool:
    if not tracking_uri or not tracking_uri.startswith("http"):
        return bool(tracking_uri)
    from cartridge.stack.services import http_ok

    return http_ok(f"{tracking_uri.rstrip('/')}/health", timeout=2.0)


def _ui_url(tracking_uri: str | None) -> str:
    return (tracking_uri or "").rstrip("/") if (tracking_uri or "").startswith("http") else ""


def _plain(errors: list[dict]) -> list[dict]:
    """Validation errors without the raw input objects, which need not be JSON."""
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]


def _version() -> str:
    import cartridge

    return cartridge.__version__
