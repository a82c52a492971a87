"""Celery tasks and worker entry points (the app itself is fedsite.celery)."""
