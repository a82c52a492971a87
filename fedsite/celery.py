"""The Celery app: JSON only, late acks for long tasks, beat schedule here."""

import os

from celery import Celery

from fedsite import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fedsite.settings")
broker.install()

app = Celery("fedsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "deliver-outbox": {"task": "workers.tasks.deliver_due_outbox", "schedule": 5.0},
        "reconcile-jobs": {"task": "workers.tasks.reconcile_jobs", "schedule": 10.0},
        "expire-tickets": {"task": "workers.tasks.expire_tickets", "schedule": 60.0},
        "heartbeat-partners": {"task": "workers.tasks.heartbeat_partners", "schedule": 30.0},
    },
)
app.autodiscover_tasks(["workers"], related_name="tasks")
