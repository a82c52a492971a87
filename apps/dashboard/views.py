"""Server-rendered pages. (The full dashboard grows in its own issue.)"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from apps.workspaces.models import Workspace


@login_required
def home(request):
    workspaces = Workspace.objects.filter(memberships__user=request.user).distinct()
    return render(request, "dashboard/home.html", {"workspaces": workspaces})
