from django.apps import AppConfig


class PeerConfig(AppConfig):
    name = "apps.peer"
    verbose_name = "Peer"
