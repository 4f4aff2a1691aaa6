"""The HTTP service: one registered model, packed into the bento, answering JSON requests.

`deploy.bento.build` packs a registered version with this module's arguments (`settings.ServiceArgs`),
so a bento and its container need no params.yaml and no MLflow server; the request schema comes from
the MLflow signature and the feature profile (`schemas`), so /docs lists the real features. This
module is the wiring BentoML needs at module level; the parts are plain code beside it.

Single rows to /predict are scored together (`batcher.MicroBatcher`); many rows go to /predict_batch
as objects, /predict_columns as a table, or fastest /predict_arrow as an Arrow IPC stream
(`arrow.ArrowRows`). /predict and /predict_arrow are plain Starlette routes mounted beside the APIs
(`routes`): the one-row path skips the API wrapper's own work.
{%- if cookiecutter.feature_store == "feast" %}
/predict_entity takes an entity's keys and fetches its features from Feast's online store
(`entities.OnlineRows`).
{%- endif %}
`guard.Guard` runs in front (tokens, rate and body limits, request ids, one error shape); /livez and
/readyz are BentoML's; GET /model_card answers the packed model card. Each worker serves gRPC too
(`grpc.server`); /metrics carries `metrics`; `prediction_log` keeps a sample for drift checks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
from starlette.responses import JSONResponse

from .. import auth_off, prediction_log
from ..errors import SecurityError
from ..integrity import MLFLOW_MODEL_FOLDER, load_model
from ..model_card import BENTO_METADATA_KEY
from ..settings import ServiceArgs
from . import metrics as service_metrics
from . import openapi, routes, schemas
from .arrow import ARROW_STREAM, ArrowRows
from .batcher import MicroBatcher, Scores, trust_checked_rows, warnings_ignored
{%- if cookiecutter.feature_store == "feast" %}
from .entities import REPO_VARIABLE, OnlineRows, key_model
{%- endif %}
from .fallback import Answering, Loaded, load_fallback, warm_up
from .grpc import listen_address
from .grpc import server as grpc_server
from .guard import (
    PROXIES_VARIABLE,
    Access,
    Guard,
    configured_tokens,
    request_id_of,
    trusted_proxies,
)
from .http_errors import QuietClientErrors
from .model_meta import read_model_meta
from .profile_policy import ProfilePolicy
from .schemas import (
    BatchPrediction,
    Metadata,
    Prediction,
    RowOutOfProfile,
    prediction_header,
    probability_fields,
)
from .shedding import LoadShedder

# Most single rows scored in one model call when many arrive at once.
MICRO_BATCH_ROWS = 128
logger = logging.getLogger("bentoml.service")
logging.getLogger("bentoml._internal.server.http_app").addFilter(QuietClientErrors())

ARGS = bentoml.use_arguments(ServiceArgs)
STORED_MODEL = bentoml.models.get(ARGS.model_tag)
MODEL_DIR = Path(STORED_MODEL.path_of(MLFLOW_MODEL_FOLDER))
META = read_model_meta(MODEL_DIR)
FEATURES, PROFILE = META.features, META.profile
MODEL_NAME = STORED_MODEL.info.labels["registered_model"]
MODEL_VERSION = int(STORED_MODEL.info.labels["registered_version"])
TASK = STORED_MODEL.info.labels["task"]
MAX_ROWS = ARGS.serving.max_batch_rows
# The version's model card as JSON text, packed by the build (None: trained before model cards).
MODEL_CARD = STORED_MODEL.info.metadata.get(BENTO_METADATA_KEY)

Row = schemas.row_model(FEATURES, PROFILE, f"{MODEL_NAME} v{MODEL_VERSION}", META.example)
Columns = schemas.columns_model(FEATURES, PROFILE, MAX_ROWS, META.example)
rows_as_array = schemas.rows_reader(FEATURES, PROFILE)
read_row = schemas.row_body_reader(Row, rows_as_array)
Rows = schemas.batch_model(Row, MAX_ROWS)
arrow_rows = ArrowRows(FEATURES, PROFILE, MAX_ROWS, ARGS.serving.max_body_bytes)
PROFILE_POLICY = ProfilePolicy(FEATURES, PROFILE, ARGS.serving.out_of_profile)
# The serving entry point, where BentoML requires it, reads the tokens from its environment.
TOKENS, TOKEN_PROBLEM = configured_tokens(ARGS.serving.require_auth, os.environ)
# Tokens and rate limit of this worker's REST APIs (Guard) and gRPC methods alike.
ACCESS = Access(TOKENS, ARGS.serving.rate_limit)
GRPC_ADDRESS = listen_address(ARGS.serving.grpc_port, os.environ)
# Read by uvicorn once this module is imported: X-Forwarded-For counts only from these peers.
os.environ[PROXIES_VARIABLE], PROXIES_PROBLEM = trusted_proxies(os.environ)
{%- if cookiecutter.feature_store == "feast" %}
# None: the project had no feature_store section at build time, and the service no /predict_entity.
ONLINE = ARGS.online_features
EntityKey = ONLINE and key_model(ONLINE.entity_keys)
# A container's own Feast repository (a mounted feature_store.yaml) replaces the build's.
FEATURE_REPO = ONLINE and (os.environ.get(REPO_VARIABLE) or ONLINE.repo)
{%- endif %}


def metrics() -> service_metrics.Metrics:
    """This model's Prometheus series (made once per serving worker, see metrics.for_model)."""
    return service_metrics.for_model(TASK, MODEL_VERSION, META.prediction_buckets)


def observe_answer(endpoint: str, status: int, seconds: float) -> None:
    """Guard calls this once an API answer's last byte is sent."""
    metrics().answer(endpoint, status, seconds)


# /predict without the API wrapper's work, and what BentoML's decorators cannot express: a body
# that is not JSON, and a GET.
STARLETTE_ROUTES = routes.starlette_routes(
    read_row, arrow_rows, MODEL_CARD, f"{MODEL_NAME} v{MODEL_VERSION}", bentoml.get_current_service
)


@bentoml.asgi_app(STARLETTE_ROUTES, path="/")  # only its own routes match: the rest stays BentoML's
@bentoml.service(
    name="model_service",
    description=f"Serves {MODEL_NAME} v{MODEL_VERSION} ({TASK}).",
    # serving.workers (default 1): scale with replicas first, several workers share one socket.
    workers=ARGS.serving.workers,
    traffic={"timeout": 30},
    # BentoML would open OpenTelemetry spans (for the request and each of its messages) and write an
    # access log line for every request: with the spans thrown away (no exporter) and nginx or the
    # ingress logging access, that was half of /predict's requests/s (benchmarks/README.md).
    tracing={} if ARGS.serving.tracing else {"excluded_urls": [".*"]},
    logging={"access": {"enabled": ARGS.serving.access_log}},
)
class ModelService:
    """Loads the packed model (and fallback) once per worker; answers name the version behind them.

    APIs are `async def` and the model runs in a thread of its own (`scores`): the event loop
    goes on reading requests meanwhile, and /predict batches the rows that pile up.
    """

    bento_model = bentoml.models.BentoModel(ARGS.model_tag)
    fallback_model = ARGS.fallback and bentoml.models.BentoModel(ARGS.fallback.model_tag)

    def __init__(self) -> None:
        if TOKEN_PROBLEM or PROXIES_PROBLEM:
            raise SecurityError(TOKEN_PROBLEM or PROXIES_PROBLEM)
        if TOKENS is None:
            if refused := auth_off.refusal(False, os.environ):
                raise SecurityError(refused)
            logger.warning(
                "AUTHENTICATION IS OFF (serving.require_auth: false): anyone who reaches this "
                "server can call its APIs. Only for local development."
            )
        # The expected digest is the bento's own argument, pinned from the registry by the build
        # (bento.yaml, in the image), not anything stored beside the files it covers.
        self.model = load_model(
            self.bento_model.path_of(MLFLOW_MODEL_FOLDER),
            ARGS.model_sha256,
            f"{MODEL_NAME} v{MODEL_VERSION} ({self.bento_model.tag})",
        )
        trained_on = [str(name) for name in getattr(self.model, "feature_names_in_", FEATURES)]
        if trained_on != FEATURES:
            raise RuntimeError(f"signature columns {FEATURES} differ from the model's {trained_on}")
        self.with_probability = TASK == "classification" and hasattr(self.model, "predict_proba")
        # The answers' keys of class_probabilities: the labels as text, in predict_proba's order.
        self.classes = (
            [str(label) for label in self.model.classes_] if self.with_probability else []
        )
        self.answering = Answering(
            Loaded(self.model, MODEL_VERSION),
            load_fallback(ARGS.fallback, MODEL_NAME, self.model, FEATURES, self.with_probability),
            ARGS.serving.on_model_error,
            self.with_probability,
        )
        metrics()  # before the first request, whose threads would race to make them
        self.shedder = LoadShedder(ARGS.serving.queue_deadline_ms, metrics().shed)
        log_location = (
            os.environ.get(prediction_log.LOCATION_VARIABLE) or ARGS.monitoring.prediction_log
        )
        self.prediction_log = None
        if ARGS.monitoring.sample_rate > 0 and log_location != prediction_log.OFF:
            self.prediction_log = prediction_log.PredictionLog(
                log_location,
                FEATURES,
                MODEL_VERSION,
                ARGS.monitoring.sample_rate,
                ARGS.monitoring.flush_seconds,
                categorical=META.categorical,
                classes=self.classes,
            )
        # The one thread that runs the model, so that only it swaps the warning filters.
        self.model_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="model", initializer=trust_checked_rows
        )
        self.batcher = MicroBatcher(self.scores, MICRO_BATCH_ROWS)
{%- if cookiecutter.feature_store == "feast" %}
        self.online_rows = ONLINE and OnlineRows(
            FEATURE_REPO, ONLINE.feature_service, ONLINE.entity_keys, FEATURES, PROFILE
        )
{%- endif %}
        warm_up(self.model, META.example_input(), self.with_probability)
        # What is loaded by now (imports, the model) lives as long as the worker. Frozen, it is left
        # out of the garbage collector's full passes, which otherwise walk it again and again and
        # stall every answer meanwhile (LR at concurrency 64: p99 241 -> 87 ms, benchmarks/README.md).
        gc.collect()
        gc.freeze()

    async def scores(self, features: np.ndarray) -> Scores:
        """_model_scores in the model thread: the event loop goes on reading requests meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.model_thread, self._model_scores, features)

    def _model_scores(self, features: np.ndarray) -> Scores:
        """Scores of rows of features, in order, by the model or its fallback (`fallback.Answering`);
        the call's time feeds the shedder's estimate of the wait."""
        started = time.perf_counter()
        try:
            with warnings_ignored():
                scored = self.answering.scores(META.model_input(features))
        finally:
            self.shedder.measured(len(features), time.perf_counter() - started)
        metrics().predictions(scored.predictions)
        return scored

    def _log(
        self,
        request_id: str,
        endpoint: str,
        features: np.ndarray,
        scored: Scores,
    ) -> None:
        """Hand the answer, and the version that made it, to the prediction log (it keeps the
        sampled requests)."""
        if self.prediction_log is not None:
            self.prediction_log.record(request_id, endpoint, features, *scored)

    @bentoml.on_startup
    async def _serve_grpc(self) -> None:
        """gRPC beside HTTP, in this worker's event loop: it runs once the model is loaded."""
        self.grpc = None
        if GRPC_ADDRESS:
            shared = grpc_server.Shared(
                self, ACCESS, Row, Rows, rows_as_array, observe_answer, MODEL_VERSION
            )
            self.grpc = await grpc_server.start(shared, GRPC_ADDRESS, ARGS.serving.max_body_bytes)

    @bentoml.on_shutdown
    async def _flush_prediction_log(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace=5)
        if self.prediction_log is not None:
            self.prediction_log.close()

{%- if cookiecutter.feature_store == "feast" %}

    if ONLINE is not None:

        @bentoml.api
        async def predict_entity(self, key: EntityKey, /, ctx: bentoml.Context) -> Prediction:  # type: ignore[valid-type]
            """Score one entity by its keys, e.g. {"patient_id": 17}: the online store has its
            features, as the last `materialize` left them. An entity it does not hold is a 404; the
            answer is /predict's."""
            row = await asyncio.to_thread(self.online_rows.row, key.model_dump(by_alias=True))
            if isinstance(row, JSONResponse):
                ctx.response.status_code = row.status_code  # BentoML answers with the context's
                return row
            answer = await self.scored_row(row, request_id_of(ctx.request.scope), "predict_entity")
            if isinstance(answer, JSONResponse):
                ctx.response.status_code = answer.status_code
            else:
                ctx.response.headers.update(
                    prediction_header([answer.prediction], answer.model_version)
                )
            return answer
{%- endif %}

    async def scored_row(
        self, features: np.ndarray, request_id: str, endpoint: str
    ) -> Prediction | JSONResponse:
        """The answer for one checked row (/predict, gRPC Predict{% if cookiecutter.feature_store == "feast" %}, /predict_entity{% endif %}), scored by the
        micro-batcher."""
        outside = PROFILE_POLICY.judge(features, metrics())
        if isinstance(outside, JSONResponse):
            return outside
        scored = await self.shedder.answer(endpoint, 1, lambda: self.batcher.score(features[0]))
        if isinstance(scored, JSONResponse):
            return scored
        prediction, probabilities, version = scored
        metrics().answered_by(version, endpoint)
        probabilities = None if probabilities is None else probabilities[None, :]
        self._log(request_id, endpoint, features, Scores([prediction], probabilities, version))
        fields = probability_fields(probabilities, self.classes)
        return Prediction(
            prediction=prediction,
            probability=fields["probabilities"][0] if fields else None,
            class_probabilities=fields["class_probabilities"][0] if fields else None,
            model_version=version,
            fallback=version != MODEL_VERSION,
            out_of_profile=outside.get(0, []),
        )

    @bentoml.api
    async def predict_batch(self, batch: Rows, /, ctx: bentoml.Context) -> BatchPrediction:  # type: ignore[valid-type]
        """Score up to max_batch_rows rows: {"rows": [{...}, ...]}.

        Kept for clients that hold rows as objects; /predict_columns takes the same rows as a table
        and answers the same, about twice as fast (each object here is checked on its own).
        """
        return await self._batch_api(rows_as_array(batch.rows), ctx, "predict_batch")

    @bentoml.api
    async def predict_columns(self, table: Columns, /, ctx: bentoml.Context) -> BatchPrediction:
        """Score up to max_batch_rows rows sent as a table (what pandas' to_json orient="split" writes).

        The body is {"columns": [<feature>, ...], "data": [[<value>, ...], ...]}: the fast way to
        score many rows as JSON (POST /predict_arrow takes them as an Arrow IPC stream, faster
        still). The answer is /predict_batch's.
        """
        return await self._batch_api(table.features, ctx, "predict_columns")

    async def _batch_api(
        self, features: np.ndarray, ctx: bentoml.Context, endpoint: str
    ) -> BatchPrediction | JSONResponse:
        """scored_rows for a BentoML API: status and header go through the context it answers from."""
        answer = await self.scored_rows(features, request_id_of(ctx.request.scope), endpoint)
        if isinstance(answer, JSONResponse):
            ctx.response.status_code = answer.status_code  # BentoML answers with the context's
        else:
            ctx.response.headers.update(prediction_header(answer.predictions, answer.model_version))
        return answer

    async def scored_rows(
        self, features: np.ndarray, request_id: str, endpoint: str
    ) -> BatchPrediction | JSONResponse:
        """The batch endpoints' answer for checked rows: one model call in the model thread."""
        outside = PROFILE_POLICY.judge(features, metrics())
        if isinstance(outside, JSONResponse):
            return outside
        scored = await self.shedder.answer(endpoint, len(features), lambda: self.scores(features))
        if isinstance(scored, JSONResponse):
            return scored
        predictions, probabilities, version = scored
        metrics().answered_by(version, endpoint)
        self._log(request_id, endpoint, features, scored)
        return BatchPrediction(
            predictions=predictions,
            **probability_fields(probabilities, self.classes),
            model_version=version,
            fallback=version != MODEL_VERSION,
            out_of_profile=[
                RowOutOfProfile(row=index, features=names) for index, names in outside.items()
            ],
        )

    @bentoml.api
    async def metadata(self) -> Metadata:
        """Which model this server runs and the features it expects (POST, like every BentoML API)."""
        return Metadata(
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            task=TASK,
            features=FEATURES,
            bento_model=str(self.bento_model.tag),
            max_batch_rows=MAX_ROWS,
            out_of_profile=ARGS.serving.out_of_profile,
            feature_profile=PROFILE,
        )


ModelService.add_asgi_middleware(
    Guard,
    protected={
        **{api.route: "application/json" for api in ModelService.apis.values()},
        "/predict": "application/json",
        "/predict_arrow": ARROW_STREAM,
        "/model_card": "",  # GET, no body
    },
    # BentoML documents its own APIs only: /docs.json gets this one from Guard.
    documented={
        "/predict": openapi.predict_operation(Row),
        "/predict_arrow": openapi.arrow_operation(),
        "/model_card": openapi.model_card_operation(),
    },
    access=ACCESS,
    max_body_bytes=ARGS.serving.max_body_bytes,
    model_version=MODEL_VERSION,
    observe=observe_answer,
)
