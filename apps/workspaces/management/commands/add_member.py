"""manage.py add_member SLUG USERNAME --role ROLE [--password P]"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.workspaces.choices import Role
from apps.workspaces.models import Workspace
from apps.workspaces.services import add_member


class Command(BaseCommand):
    help = "Add a user to a workspace with a role (creating the user if a password is given)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("username")
        parser.add_argument("--role", choices=Role.values, default=Role.MEMBER)
        parser.add_argument("--password", help="password for a new user")

    def handle(self, *args, **opts):
        workspace = Workspace.objects.filter(slug=opts["slug"]).first()
        if workspace is None:
            raise CommandError(f"no workspace {opts['slug']!r}")
        User = get_user_model()
        if not User.objects.filter(username=opts["username"]).exists():
            if not opts["password"]:
                raise CommandError(f"user {opts['username']!r} does not exist: give --password to create it")
            User.objects.create_user(username=opts["username"], password=opts["password"])
        try:
            m = add_member(workspace, username=opts["username"], role=opts["role"], acting_user=None, source="cli")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"{m.user.get_username()} is {m.role} of {workspace.slug}"))
