"""manage.py run_peer [--listen HOST:PORT]: the gRPC PeerService (mutual TLS), until SIGTERM."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.peer.server import PortInUse, serve


class Command(BaseCommand):
    help = "Run the peer service (gRPC, mutual TLS) on FEDSITE_PEER_LISTEN; stops gracefully on SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--listen", default=None, help=f"address to bind (default {settings.FEDSITE_PEER_LISTEN})")

    def handle(self, *args, **opts):
        try:
            serve(opts["listen"] or settings.FEDSITE_PEER_LISTEN)
        except PortInUse as exc:
            raise CommandError(str(exc)) from None
