"""Template context shared by every dashboard page."""

from django.conf import settings

from apps.dashboard.access import user_workspaces


def fedsite(request):
    workspace = getattr(request, "workspace", None)
    membership = getattr(request, "membership", None)
    return {
        "installation_name": settings.FEDSITE_INSTALLATION_NAME,
        "workspace": workspace,
        "membership": membership,
        "can": getattr(request, "can", None),
        # Lazy: only pages with a header (signed in) evaluate it.
        "my_workspaces": lambda: user_workspaces(request.user) if hasattr(request, "user") else [],
    }
