"""manage.py rotate_certificates [--days N]: a new leaf key and certificate from the same CA."""

from django.core.management.base import BaseCommand

from apps.peer.identity import LEAF_DAYS, ensure_identity, rotate_leaf


class Command(BaseCommand):
    help = (
        "Issue a new leaf certificate and key from the installation CA. Partners pin the CA, so they keep "
        "working; the running peer server picks the new certificate up for new connections within a second, "
        "and workers present it on their next channel. (CA rollover is a new partnership: see docs/peer.md.)"
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")

    def handle(self, *args, **opts):
        before = ensure_identity().certificate()
        ident = rotate_leaf(opts["days"])
        after = ident.certificate()
        self.stdout.write(
            f"old leaf: serial {before.serial_number:x}, valid until {before.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"new leaf: serial {after.serial_number:x}, valid until {after.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                f"(CA {ident.ca_fingerprint[:23]}… unchanged)"
            )
        )
