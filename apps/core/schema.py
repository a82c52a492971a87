"""What the OpenAPI schema says beyond what drf-spectacular infers from serializers.

* The JSON fields' shapes (`Job.result`, `ModelVersion.metrics`/`lineage`, `Partner.policies`,
  `Dataset.schema`/`stats`, `Ticket.params`) as named components; serializer fields point at
  them with `typed_json(...)`.
* Ticket parameters per job kind, generated from apps.tickets.params (the validator's source):
  a group component per group (`ParamsTrain`…), a params object per kind (`TicketParamsVerticalNn`…),
  and the create body as a `oneOf` discriminated by `kind`.
* Every error status an endpoint can answer (400, 401, 403, 404, 409, 415, 429), with its body.
* OpenAPI links from each created object to the operations on it, so a client (and
  schemathesis' stateful phase) can follow it.

`postprocess` is a drf-spectacular postprocessing hook (settings.SPECTACULAR_SETTINGS).
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.tickets.params import GROUPS, KIND_GROUPS, group_schema, kind_params_schema

REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", text) if part)


def group_component(group: str) -> str:
    return "Params" + _camel(group)


def kind_component(kind: str) -> str:
    return "TicketParams" + _camel(kind)


NUM = {"type": "number", "nullable": True}
SPLIT_METRICS = {
    "type": "object",
    "description": "metric name → value (null when undefined, e.g. AUC with one class)",
    "properties": {
        k: {**NUM, "description": d}
        for k, d in {
            "loss": "log loss",
            "auc": "area under the ROC curve",
            "ks": "Kolmogorov-Smirnov statistic",
            "accuracy": "accuracy at 0.5",
        }.items()
    },  # fmt: skip
    "additionalProperties": NUM,
}
TRAINING_METRICS = {
    "type": "object",
    "description": "the kept epoch's (or iteration's) metrics per split",
    "properties": {
        "train": _ref("SplitMetrics"),
        "validation": {**_ref("SplitMetrics"), "description": "the held-out rows: read the model's AUC here"},
        "early_stopping": _ref("SplitMetrics"),
    },
    "additionalProperties": _ref("SplitMetrics"),
}
TRAINING_SUMMARY = {
    "type": "object",
    "description": "what a training step reports; `metrics.validation.auc` is the validation AUC",
    "properties": {
        "metrics": _ref("TrainingMetrics"),
        "best_epoch": {"type": "integer", "nullable": True, "description": "the epoch whose weights were kept"},
        "epochs": {"type": "integer", "nullable": True, "description": "epochs run"},
        "rows": {"type": "integer", "nullable": True},
        "history": {
            "type": "array",
            "description": "one entry per epoch (or tree): its metrics per split",
            "items": {"type": "object", "additionalProperties": True},
        },
        "trees": {"type": "integer", "nullable": True, "description": "trees built (boosted trees)"},
        "best_iteration": {"type": "integer", "nullable": True, "description": "trees kept (boosted trees)"},
        "feature_importance": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}
STEP_RESULT = {
    "type": "object",
    "description": "a step's result as the runtime reported it",
    "additionalProperties": True,
}
_STREAM_SIDE = {
    "type": "object",
    "description": "a side's latest join counters (null: not reported yet)",
    "properties": {
        k: NUM for k in ("events_read", "matched", "match_rate", "late_events", "blocks_committed", "lag_s")
    },
}
COMPONENTS: dict[str, dict[str, Any]] = {
    "StreamStatus": {
        "type": "object",
        "nullable": True,
        "description": "stream jobs only (null otherwise): live join figures of both sides and the versions published",
        "properties": {
            "source": {"type": "string", "description": "this side's stream source"},
            "waiting_for_data": {
                "type": "boolean",
                "description": "the sources deliver nothing new right now (a state, not a failure)",
            },
            "local": _STREAM_SIDE,
            "partner": _STREAM_SIDE,
            "versions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "version": {"type": "integer"},
                        "auc": NUM,
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
    "PsiPartitions": {
        "type": "array",
        "nullable": True,
        "description": "partitioned PSI jobs only (`psi.partitions` > 1; null otherwise): this side's partitions "
        "in order, partition i paired with the partner's partition i (docs/psi.md, Partitioned PSI)",
        "items": {
            "type": "object",
            "properties": {
                "index": {"type": "integer", "description": "the partition's number, 0 to P-1"},
                "state": {
                    "type": "string",
                    "enum": ["pending", "running", "succeeded", "failed", "stopped"],
                    "description": "stopped: cut short because the job ended (e.g. another partition failed)",
                },
                "progress": {"type": "number", "description": "0 to 1"},
                "input_size": {
                    "type": "integer",
                    "nullable": True,
                    "description": "this side's ids in the partition (once it succeeded)",
                },
                "intersection_size": {
                    "type": "integer",
                    "nullable": True,
                    "description": "common ids in the partition (once it succeeded)",
                },
                "reused": {
                    "type": "boolean",
                    "nullable": True,
                    "description": "a retry took an earlier attempt's result instead of running the PSI again "
                    "(null while unknown)",
                },
                "error": {"type": "string", "description": "why it failed (empty unless failed)"},
            },
            "required": ["index", "state", "progress", "input_size", "intersection_size", "reused", "error"],
        },
    },
    "SplitMetrics": SPLIT_METRICS,
    "TrainingMetrics": TRAINING_METRICS,
    "TrainingSummary": TRAINING_SUMMARY,
    "JobResult": {
        "type": "object",
        "description": "each step's result, by step",
        "properties": {
            "psi": {
                **STEP_RESULT,
                "description": "the PSI step's figures",
                "properties": {
                    "intersection_size": {"type": "integer", "description": "common ids"},
                    "input_size": {"type": "integer", "description": "ids on this side"},
                    "peer_input_size": {"type": "integer", "description": "ids at the partner"},
                    "engine": {"type": "string"},
                    "protocol": {"type": "string"},
                },
            },
            "train": {
                "allOf": [_ref("TrainingSummary")],
                "description": "the neural network training step (with `model_dir`)",
            },
            "tree": {"allOf": [_ref("TrainingSummary")], "description": "the boosted trees step (with `model_dir`)"},
        },
        "additionalProperties": STEP_RESULT,
    },
    "ModelLineage": {
        "type": "object",
        "description": "where a model version came from",
        "properties": {
            "ticket": {"type": "string", "format": "uuid"},
            "job": {"type": "string", "format": "uuid"},
            "local_dataset": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                "additionalProperties": True,
            },
            "remote_dataset": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                "additionalProperties": True,
            },
            "partner": {"type": "string", "description": "the partner's name"},
            "params": {"type": "object", "additionalProperties": True, "description": "the ticket's params"},
            "parent": {
                "type": "string",
                "nullable": True,
                "format": "uuid",
                "description": "continual training: the version this one continued from",
            },
            "version": {"type": "integer", "description": "continual training: the version's number in its job"},
        },
        "additionalProperties": True,
    },
    "PartnerPolicies": {
        "type": "object",
        "description": "job kind → how a proposal of that kind from this partner is decided; model_promotion → "
        "how its requests to promote a model version are decided (default always_allow)",
        "properties": {
            kind: {"type": "string", "enum": ["always_allow", "manual", "always_refuse"]}
            for kind in [*KIND_GROUPS, "model_promotion"]
        },
        "additionalProperties": False,
    },
    "DatasetColumn": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
        "required": ["name", "type"],
        "additionalProperties": True,
    },
    "ColumnStats": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "count": {"type": "integer", "description": "non-empty values"},
            "nulls": {"type": "integer", "description": "empty values"},
            "min": {"type": "number"},
            "max": {"type": "number"},
            "mean": {"type": "number"},
            "distinct": {"type": "integer", "description": "distinct values (when few)"},
        },
        "additionalProperties": True,
    },
    "ValidationError": {
        "type": "object",
        "description": "400: each bad field (dotted, e.g. `params.train.epochs`) → its messages "
        "(a list of strings, or an object for nested input); or `detail` (with `code`)",
        "additionalProperties": {
            "anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}],
        },
    },
    "Error": {
        "type": "object",
        "description": "an error with its message (and a machine code where there is one)",
        "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
        "required": ["detail"],
        "additionalProperties": True,
    },
}
DATASET_SCHEMA = {"type": "array", "items": _ref("DatasetColumn"), "description": "the columns, in file order"}
DATASET_STATS = {
    "type": "object",
    "additionalProperties": _ref("ColumnStats"),
    "description": "column name → its statistics",
}


def typed_json(schema: dict[str, Any], *, read_only: bool = True, **kwargs: Any) -> serializers.JSONField:
    """A JSON serializer field (read-only unless said) whose schema is `schema` (a dict or a $ref)."""

    @extend_schema_field(schema)
    class Typed(serializers.JSONField):
        pass

    return Typed(read_only=read_only, **kwargs)


def ref(name: str) -> dict[str, str]:
    return _ref(name)


def params_any_of() -> dict[str, Any]:
    return {
        "anyOf": [_ref(kind_component(k)) for k in KIND_GROUPS],
        "description": "the ticket's parameters, every default filled in: the `TicketParams…` object of its kind",
    }


# --- the hook ---------------------------------------------------------------------------------

ERRORS = {
    "400": ("ValidationError", "bad input: the body names each bad field"),
    "401": ("Error", "not authenticated"),
    "403": ("Error", "your role may not do this"),
    "404": ("Error", "no such workspace or object (or not yours)"),
    "409": ("Error", "the object's state does not allow it, or someone changed it first"),
    "415": ("Error", "unsupported media type: send JSON"),
    "429": ("Error", "throttled: retry after the Retry-After header's seconds"),
}


def _add_components(schemas: dict[str, Any]) -> None:
    schemas.update(COMPONENTS)
    for g in GROUPS:
        schemas[group_component(g)] = group_schema(g)
    for kind in KIND_GROUPS:
        schemas[kind_component(kind)] = kind_params_schema(kind, lambda g: _ref(group_component(g)))
    base = schemas.get("TicketCreateRequest")
    if base is None:
        return
    variants = {}
    for kind in KIND_GROUPS:
        name = "TicketCreate" + _camel(kind) + "Request"
        props = dict(base["properties"])
        props["kind"] = {"type": "string", "enum": [kind], "description": f"`{kind}`"}
        props["params"] = {**_ref(kind_component(kind))}
        schemas[name] = {**base, "properties": props}
        variants[kind] = REF + name
    schemas["TicketCreateRequest"] = {
        "oneOf": [{"$ref": r} for r in variants.values()],
        "discriminator": {"propertyName": "kind", "mapping": variants},
        "description": "a proposal; `params` takes the parameter groups of its `kind` (see `TicketParams…`)",
    }


def _declare_errors(paths: dict[str, Any]) -> None:
    for path, item in paths.items():
        public = path.startswith("/api/v1/runtime/")
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            codes = ["400", "401", "404", "429"]
            if not public:
                codes.append("403")
            if method != "get":
                codes += ["409", "415"]
            for code in codes:
                if code not in responses:
                    schema_name, text = ERRORS[code]
                    responses[code] = {
                        "description": text,
                        "content": {"application/json": {"schema": _ref(schema_name)}},
                    }


def _add_links(paths: dict[str, Any]) -> None:
    """From each POST that creates an object (201 with an `id`), link to every operation on `{id}`."""
    for path, item in paths.items():
        post = item.get("post")
        created = (post or {}).get("responses", {}).get("201")
        if not created or "{id}" in path:
            continue
        links: dict[str, Any] = {}
        detail = path + "{id}/"
        for other, other_item in paths.items():
            if not other.startswith(detail):
                continue
            for method, op in other_item.items():
                if method not in ("get", "post", "put", "patch", "delete") or "operationId" not in op:
                    continue
                params: dict[str, str] = {"id": "$response.body#/id"}
                if "{workspace_slug}" in other:
                    params["workspace_slug"] = "$request.path.workspace_slug"
                links[_camel(op["operationId"])] = {"operationId": op["operationId"], "parameters": params}
        if links:
            created["links"] = links
    # A new workspace: its slug opens every workspace resource.
    ws_post = (paths.get("/api/v1/workspaces/") or {}).get("post")
    if ws_post and "201" in ws_post.get("responses", {}):
        links = {}
        for other, other_item in paths.items():
            if (
                not other.startswith("/api/v1/workspaces/{workspace_slug}/")
                or "{id}" in other
                or "{invitation_id}" in other
            ):
                continue
            for method, op in other_item.items():
                if method == "get" and "operationId" in op:
                    links[_camel(op["operationId"])] = {
                        "operationId": op["operationId"],
                        "parameters": {"workspace_slug": "$response.body#/slug"},
                    }
        ws_post["responses"]["201"]["links"] = links


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    _add_components(schemas)
    _declare_errors(result.get("paths", {}))
    _add_links(result.get("paths", {}))
    return result
