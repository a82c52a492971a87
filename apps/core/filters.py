"""The filter backend of tenant resources: a filter naming an object chooses only among the workspace's own.

django-filter's choice filters (`?ticket=`, `?partner=`) otherwise accept any
row of the table: another workspace's id answered 200 with an empty page while a
random id answered 400, telling whether the id exists elsewhere. Scoped here,
both are the same unknown choice.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django_filters import ModelChoiceFilter, ModelMultipleChoiceFilter
from django_filters.rest_framework import DjangoFilterBackend


class TenantFilterBackend(DjangoFilterBackend):
    """DjangoFilterBackend whose object filters choose among the view's workspace's objects only."""

    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is None:
            return None
        workspace = getattr(view, "workspace", None)
        for name, flt in filterset.filters.items():
            if not isinstance(flt, ModelChoiceFilter | ModelMultipleChoiceFilter):
                continue
            model = flt.queryset.model if flt.queryset is not None else None
            if model is None:
                raise ImproperlyConfigured(f"{type(view).__name__}: filter {name!r} has no queryset to scope")
            try:
                model._meta.get_field("workspace")
            except FieldDoesNotExist:
                raise ImproperlyConfigured(
                    f"{type(view).__name__}: filter {name!r} chooses among {model.__name__}, which has no workspace"
                ) from None
            flt.queryset = model._default_manager.filter(workspace=workspace)
        return filterset
