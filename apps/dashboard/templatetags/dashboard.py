"""Small presentation helpers: status badges, percentages, numbers."""

from __future__ import annotations

from django import template
from django.utils import timezone

register = template.Library()

TONES = {
    "ok": {"connected", "approved", "succeeded", "production", "delivered"},
    "bad": {"failed", "rejected", "suspended", "refused", "always_refuse"},
    "warn": {"pending", "invited", "proposed", "expired", "withdrawn", "cancelled", "starting", "manual"},
    "info": {"running", "candidate"},
    "accent": {"always_allow"},
}
LABELS = {
    "pending": "Pending",
    "always_allow": "Always allow",
    "always_refuse": "Always refuse",
    "manual": "Decide by hand",
}


@register.inclusion_tag("dashboard/_badge.html")
def badge(status: str, label: str = ""):
    tone = next((t for t, names in TONES.items() if status in names), "")
    text = label or LABELS.get(status) or (status or "—").replace("_", " ").capitalize()
    return {"tone": tone, "text": text}


@register.filter
def pct(value) -> str:
    try:
        return f"{float(value) * 100:.0f}%"
    except (TypeError, ValueError):
        return "—"


@register.filter
def pct_width(value) -> str:
    """A CSS width (0–100, dot decimal whatever the locale)."""
    try:
        return f"{max(0.0, min(1.0, float(value))) * 100:.1f}"
    except (TypeError, ValueError):
        return "0"


@register.filter
def num(value, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:.{int(digits)}g}"


@register.filter
def filesize(value) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def is_past(value) -> bool:
    return bool(value) and value <= timezone.now()


@register.filter
def words(value) -> str:
    """learning_rate → Learning rate"""
    return str(value).replace("_", " ").capitalize()


@register.filter
def headline(metrics, name: str):
    """A model's headline metric: the validation value, else the top-level one."""
    if not isinstance(metrics, dict):
        return None
    if isinstance(metrics.get("metrics"), dict):
        metrics = metrics["metrics"]
    validation = metrics.get("validation")
    if isinstance(validation, dict) and name in validation:
        return validation[name]
    return metrics.get(name)


OBJECT_PAGES = {
    "ticket": "dashboard:ticket",
    "job": "dashboard:job",
    "dataset": "dashboard:dataset",
    "partner": "dashboard:partner",
    "modelversion": "dashboard:model",
}


@register.simple_tag
def object_url(workspace, object_type: str, object_id: str) -> str:
    """The dashboard page of an audited object, or "" when it has none."""
    from django.urls import NoReverseMatch, reverse

    name = OBJECT_PAGES.get(object_type)
    if not name or not object_id or workspace is None:
        return ""
    try:
        return reverse(name, args=[workspace.slug, object_id])
    except NoReverseMatch:
        return ""


@register.filter
def ago(value) -> str:
    """“just now”, “5 minutes ago”, … (timesince says “0 minutes”)."""
    from django.utils.timesince import timesince

    if not value:
        return "never"
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"
