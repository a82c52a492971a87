"""A client check written from the schema alone: every answer of a live installation is validated
against its own /api/schema/ (status code declared, content type, body), as schemathesis validates.

`validating_clients(base_url)` patches fedsite.localcluster.ApiClient so every request any test or
flow makes through it is checked; the returned checker holds what was seen and what violated.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import schemathesis


def response_checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def path_parameters(template: str, path: str) -> dict[str, str]:
    """The values of `template`'s {placeholders} in `path` ({} if the path does not fit the template)."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    match = re.fullmatch(pattern, path)
    return match.groupdict() if match else {}


@dataclass
class SchemaChecker:
    schema: Any
    seen: dict[str, int] = field(default_factory=dict)  # operationId → responses checked
    violations: list[str] = field(default_factory=list)

    @classmethod
    def from_url(cls, base_url: str) -> SchemaChecker:
        return cls(schemathesis.openapi.from_url(f"{base_url.rstrip('/')}/api/schema/"))

    def check(self, response: requests.Response) -> None:
        from schemathesis.core.failures import FailureGroup

        method = (response.request.method or "GET").upper()
        path = urlsplit(str(response.request.url)).path
        if not path.startswith("/api/v1/"):
            return
        operation = self.schema.find_operation_by_path(method, path)
        if operation is None:
            self.violations.append(f"{method} {path}: not in the schema")
            return
        op_id = operation.definition.raw.get("operationId", operation.label)
        self.seen[op_id] = self.seen.get(op_id, 0) + 1
        try:
            # The case carries the request's path parameters: schemathesis renders a failing case as a
            # curl command, and a template left unfilled would hide the failure behind InvalidSchema.
            case = operation.Case(path_parameters=path_parameters(operation.path, path))
            case.validate_response(response, checks=response_checks())
        except FailureGroup as group:
            for failure in group.exceptions:
                self.violations.append(
                    f"{method} {path} -> {response.status_code}: {failure.title}: {response.text[:300]}"
                )

    def component(self, name: str) -> dict[str, Any]:
        return self.schema.raw_schema["components"]["schemas"][name]


@contextlib.contextmanager
def validating_clients(base_url: str) -> Iterator[SchemaChecker]:
    from fedsite.localcluster import ApiClient

    checker = SchemaChecker.from_url(base_url)
    original = ApiClient.request

    def request(self: ApiClient, method: str, path: str, **kw: Any) -> requests.Response:
        response = original(self, method, path, **kw)
        checker.check(response)
        return response

    ApiClient.request = request  # type: ignore[method-assign]
    try:
        yield checker
    finally:
        ApiClient.request = original  # type: ignore[method-assign]
