"""manage.py register_dataset SLUG NAME PATH --id-column ID [--label-column L] [--visibility V] [--user U]

Registers a file in the workspace's own data folders (`<root>/<slug>/`), as the API and the dashboard do, with a
progress bar: an operator's way to register files too large to wait for in a
web request (the inspection reads every byte, a few MB per second).
"""

from __future__ import annotations

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.datasets.choices import Visibility
from apps.datasets.services import register_dataset
from apps.workspaces.models import Workspace


class Command(BaseCommand):
    help = "Register a CSV or Parquet file in the workspace's data folders as a dataset of a workspace, with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the workspace")
        parser.add_argument("name", help="the dataset's name in the workspace")
        parser.add_argument(
            "path",
            help="the file, in the workspace's folder <root>/<slug>/ of FEDSITE_DATA_ROOTS (relative: looked up there)",
        )
        parser.add_argument("--id-column", required=True)
        parser.add_argument("--label-column", default="")
        parser.add_argument("--description", default="")
        parser.add_argument("--visibility", choices=Visibility.values, default=Visibility.SCHEMA)
        parser.add_argument("--user", help="who registers it (recorded in the audit log); default: the command line")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, **opts):
        workspace = Workspace.objects.filter(slug=opts["slug"]).first()
        if workspace is None:
            raise CommandError(f"no workspace {opts['slug']!r}")
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None or not workspace.memberships.filter(user=user).exists():
                raise CommandError(f"{opts['user']!r} is not a member of {workspace.slug}")
        bar = None
        if not opts["no_progress"]:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="B", unit_scale=True, desc=f"inspecting {opts['name']}", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        try:
            dataset = register_dataset(
                workspace,
                name=opts["name"],
                uri=opts["path"],
                id_column=opts["id_column"],
                label_column=opts["label_column"],
                description=opts["description"],
                visibility=opts["visibility"],
                acting_user=user,
                source="cli",
                progress=progress,
            )
        except ServiceError as exc:
            raise CommandError(f"{exc.field + ': ' if exc.field else ''}{exc.message}") from None
        finally:
            if bar is not None:
                bar.close()
        columns = ", ".join(f"{c['name']} ({c['type']})" for c in dataset.schema)
        self.stdout.write(
            self.style.SUCCESS(f"registered {dataset.name} in {workspace.slug}: {dataset.row_count:,} rows; {columns}")
        )
        self.stdout.write(f"id {dataset.id}  checksum {dataset.checksum}")
