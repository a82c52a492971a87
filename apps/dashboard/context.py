"""Template context shared by every dashboard page."""

from django.conf import settings


def fedsite(request):
    return {"installation_name": settings.FEDSITE_INSTALLATION_NAME}
