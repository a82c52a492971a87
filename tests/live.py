"""Helpers for tests that drive live installations (see fedsite.localcluster)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedsite.localcluster import ApiClient, Installation


@dataclass
class Side:
    """One installation as a test sees it: its processes, workspace and admin client."""

    inst: Installation
    slug: str
    api: ApiClient  # the workspace owner

    def path(self, rest: str = "") -> str:
        return f"/api/v1/workspaces/{self.slug}/{rest}"

    def get(self, rest: str) -> Any:
        return self.api.get(self.path(rest))

    def post(self, rest: str, body: Any = None, **kw: Any) -> Any:
        return self.api.post(self.path(rest), body, **kw)

    def results(self, rest: str) -> list[dict[str, Any]]:
        body = self.get(rest)
        return body["results"] if isinstance(body, dict) and "results" in body else body

    def wait(self, rest: str, predicate: Any, timeout: float = 20) -> Any:
        return self.api.wait_for(self.path(rest), predicate, timeout=timeout)

    def audit(self, verb: str) -> list[dict[str, Any]]:
        return self.results(f"audit-events/?verb={verb}")


def wait_peer_port(inst: Installation, timeout: float = 30) -> None:
    inst.wait_peer_listening(timeout)
