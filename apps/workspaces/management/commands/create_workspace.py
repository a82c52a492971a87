"""manage.py create_workspace SLUG --name NAME --owner USERNAME [--password P | --password-file F]"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.workspaces.models import Workspace
from apps.workspaces.services import create_workspace


class Command(BaseCommand):
    help = "Create a workspace and its first owner (creating the user if needed)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="display name (default: the slug)")
        parser.add_argument("--owner", required=True, help="username of the first owner")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="password for a new owner user")
        parser.add_argument("--password-file", help="read the new owner's password from this file")
        parser.add_argument("--if-missing", action="store_true", help="succeed quietly if the workspace exists")

    def handle(self, *args, **opts):
        if opts["if_missing"] and Workspace.objects.filter(slug=opts["slug"]).exists():
            self.stdout.write(f"workspace {opts['slug']} exists")
            return
        password = opts["password"]
        if opts["password_file"]:
            with open(opts["password_file"], encoding="utf-8") as fh:
                password = fh.read().strip()
        User = get_user_model()
        user = User.objects.filter(username=opts["owner"]).first()
        if user is None:
            if not password:
                raise CommandError(
                    f"user {opts['owner']!r} does not exist: give --password or --password-file to create it"
                )
            user = User.objects.create_user(username=opts["owner"], email=opts["email"], password=password)
        try:
            ws = create_workspace(slug=opts["slug"], name=opts["name"] or opts["slug"], owner=user, source="cli")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"created workspace {ws.slug} ({ws.id}) owned by {user.get_username()}"))
