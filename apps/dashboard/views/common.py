"""What every page view shares: tenant lookups, and turning service errors into messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.core.errors import ServiceError


def get_in_workspace(request: HttpRequest, model: type[Model], pk: Any, **filters: Any) -> Any:
    """The object of this workspace, or 404 (another tenant's ids look like missing ones)."""
    obj = model._default_manager.filter(workspace=request.workspace, pk=pk, **filters).first()  # type: ignore[attr-defined]
    if obj is None:
        raise Http404(f"No such {model._meta.verbose_name}.")
    return obj


def page(request: HttpRequest, template: str, section: str, **context: Any) -> HttpResponse:
    return render(request, template, {"section": section, **context})


def act(request: HttpRequest, action: Callable[[], Any], *, success: str, then: str) -> HttpResponse:
    """Run a service call from a POST; report the outcome as a message and go to `then`."""
    try:
        action()
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect(then)


def form_error(form: forms.Form, exc: ServiceError, aliases: dict[str, str] | None = None) -> None:
    """Attach a service error to the form field it names (or to the form)."""
    field = (aliases or {}).get(exc.field or "", exc.field)
    form.add_error(field if field in form.fields else None, exc.message)
