"""Stream sources: where one side's live events arrive, named by that side when it proposes or approves.

A source is this side's business only: it is stored on this side's copy of the ticket and never
sent to the partner (the partner learns that events flow, not where they come from).

    {"kind": "folder", "location": "events/clicks"}                    # a folder inside the data folders
    {"kind": "nats", "location": "acme.clicks", "stream": "CLICKS"}    # a subject of a JetStream stream

Either may add "time_column" (default "event_time"): the events' time column (seconds since the
epoch, or a timestamp); the id column and the leader's label column are its dataset's.

A folder is judged like a dataset's file (apps/datasets/folders.py): relative to the workspace's
folders, never `..`, and it must really lie there once symlinks are followed. It must exist, so a
typo is caught when the ticket is proposed, not hours later when the job still sees no events.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from apps.core.errors import ServiceError
from apps.datasets.folders import resolve_in_workspace
from apps.datasets.inspect import DataFileError
from apps.tickets.choices import STREAM_KINDS

SOURCE_KINDS = ("folder", "nats")
# NATS subject tokens: no whitespace, no wildcards (a source reads one subject), dot-separated.
_SUBJECT = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_STREAM = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
FIELD = "stream_source"
TIME_COLUMN = "event_time"


def nats_url() -> str:
    return str(settings.FEDSITE_NATS_URL)


def clean_stream_source(workspace: Any, kind: str, source: Any) -> dict[str, Any]:
    """This side's validated source for a ticket of `kind` ({} for kinds without one)."""
    if kind not in STREAM_KINDS:
        if source:
            raise ServiceError(f"only stream job kinds take a stream source, not {kind}", field=FIELD)
        return {}
    if not source:
        raise ServiceError(
            "name where your live events arrive: {kind: folder, location: <folder in your data folder>} "
            "or {kind: nats, location: <subject>}",
            field=FIELD,
        )
    if not isinstance(source, dict):
        raise ServiceError("must be an object {kind, location}", field=FIELD)
    extra = sorted(set(source) - {"kind", "location", "stream", "time_column"})
    if extra:
        raise ServiceError(
            f"unknown keys: {', '.join(extra)}; allowed: kind, location, stream (nats), time_column", field=FIELD
        )
    time_column = source.get("time_column", TIME_COLUMN)
    if not isinstance(time_column, str) or not time_column.strip() or len(time_column) > 200:
        raise ServiceError("must be the name of the events' time column", field=f"{FIELD}.time_column")
    common = {"time_column": time_column.strip()}
    src_kind = source.get("kind", "folder")
    if src_kind not in SOURCE_KINDS:
        raise ServiceError(f"must be one of {', '.join(SOURCE_KINDS)}", field=f"{FIELD}.kind")
    location = source.get("location")
    if not isinstance(location, str) or not location.strip():
        raise ServiceError("required: a folder path, or a NATS subject", field=f"{FIELD}.location")
    location = location.strip()
    if src_kind == "nats":
        if len(location) > 255 or not _SUBJECT.match(location):
            raise ServiceError(
                f"{location!r} is not a NATS subject (dot-separated tokens of letters, digits, - and _; no wildcards)",
                field=f"{FIELD}.location",
            )
        stream = source.get("stream")
        if not isinstance(stream, str) or not _STREAM.match(stream):
            raise ServiceError(
                "required for a NATS source: the JetStream stream holding the subject (letters, digits, - and _)",
                field=f"{FIELD}.stream",
            )
        return {"kind": "nats", "location": location, "stream": stream, "url": nats_url(), **common}
    if "stream" in source:
        raise ServiceError("only a NATS source names a JetStream stream", field=f"{FIELD}.stream")
    try:
        path = resolve_in_workspace(workspace, location, folder=True, field=f"{FIELD}.location")
    except DataFileError as exc:
        raise ServiceError(exc.message.replace("uri: ", ""), field=f"{FIELD}.location") from None
    return {"kind": "folder", "location": location, "path": str(path), **common}


def describe(source: dict[str, Any]) -> str:
    """One line for pages: `folder events/clicks` or `NATS subject acme.clicks`."""
    if not source:
        return ""
    if source.get("kind") == "nats":
        return f"NATS subject {source.get('location', '')}"
    return f"folder {source.get('location', '')}"
