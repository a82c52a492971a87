"""manage.py migrate_data_folders [--apply] [--copy]

Gives every workspace its folder under each data root (`<root>/<slug>/`) and moves
the files of datasets registered before workspaces had folders into their
workspace's folder, keeping their path below the root. Without `--apply` it only
prints the plan. See docs/guide.md, "Data folders".
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.datasets.relocate import plan_relocations, relocate
from apps.workspaces.models import Workspace


class Command(BaseCommand):
    help = "Move the files of existing datasets into their workspace's own data folder (dry run unless --apply)."

    def add_arguments(self, parser):
        parser.add_argument("--apply", action="store_true", help="move (or copy) the files; default: print the plan")
        parser.add_argument(
            "--copy", action="store_true", help="copy every file instead of moving it (the original stays)"
        )

    def handle(self, *args, **opts):
        from apps.datasets.folders import ensure_workspace_folders

        for workspace in Workspace.objects.all():
            made = ensure_workspace_folders(workspace)
            if not made:
                self.stderr.write(f"{workspace.slug}: no data root is writable here; create its folders by hand")
        moves = plan_relocations(copy_all=opts["copy"])
        if not moves:
            self.stdout.write(self.style.SUCCESS("every dataset already lies in its workspace's folder"))
            return
        problems = 0
        for move in moves:
            label = f"{move.dataset.workspace.slug}/{move.dataset.name}"
            if move.problem:
                problems += 1
                self.stderr.write(self.style.ERROR(f"{label}: {move.problem}"))
                continue
            verb = "copy" if move.copy else "move"
            if not opts["apply"]:
                self.stdout.write(f"would {verb} {label}: {move.source} -> {move.target}")
                continue
            error = relocate(move)
            if error:
                problems += 1
                self.stderr.write(self.style.ERROR(f"{label}: {error}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"{verb}d {label}: {move.source} -> {move.target}"))
        if not opts["apply"]:
            self.stdout.write("dry run: nothing changed; run again with --apply")
        if problems:
            self.stderr.write(f"{problems} dataset(s) left where they are (see above)")
