"""Fedsite settings, all from environment variables (see `.env.example`).

With nothing set you get the embedded defaults: SQLite and a filesystem Celery
broker under `var/`, the local job launcher. `DATABASE_URL=postgres://…` and
`CELERY_BROKER_URL=redis://…` switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fedsite.env import (
    cache_from_url,
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
)
from fedsite.secret_key import secret_key_weakness, weak_key_message

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FEDSITE_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

FEDSITE_ENV = env_choice("FEDSITE_ENV", "development", ("development", "production", "test"))
PRODUCTION = FEDSITE_ENV == "production"
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    from django.core.exceptions import ImproperlyConfigured

    key = env_str("SECRET_KEY", "")
    if key:
        if PRODUCTION and (weakness := secret_key_weakness(key)):
            # Refuse to start: sessions, CSRF tokens and password resets are only as strong as this key.
            raise ImproperlyConfigured(weak_key_message(weakness))
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when FEDSITE_ENV=production")
    # Development: one random key per installation, kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here
    "apps.core",
    "apps.workspaces",
    "apps.audit",
    "apps.partners",
    "apps.datasets",
    "apps.tickets",
    "apps.jobs",
    "apps.registry",
    "apps.peer",
    "apps.dashboard",
]

MIDDLEWARE = [
    "apps.core.middleware.InternalHostsMiddleware",  # probes and runtime reports by pod IP or Service name
    "django.middleware.security.SecurityMiddleware",
    "apps.core.headers.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fedsite.urls"
WSGI_APPLICATION = "fedsite.wsgi.application"
ASGI_APPLICATION = "fedsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.dashboard.context.fedsite",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), BASE_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from static/ without collectstatic in development and tests.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", not PRODUCTION)

# --- Security (production turns all of these on; `manage.py check --deploy` is clean) ---
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# The kubelet's probes and the runtimes' reports reach the web inside the cluster over plain HTTP: never
# redirected (a redirected POST loses its body). apps.core.middleware lets them through the host check.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^api/v1/runtime/jobs/[0-9a-fA-F-]{32,36}/report$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
FEDSITE_CSP = env_str("FEDSITE_CSP", "")  # empty: apps.core.headers.DEFAULT_POLICY (no inline script or style)
SESSION_COOKIE_HTTPONLY = True

# --- Cache: failed sign-ins and tokens are counted here (apps.core.throttle), shared by every web process ---
CACHES = {"default": cache_from_url(env_str("CACHE_URL", "") or f"file://{VAR_DIR / 'cache'}")}
FEDSITE_AUTH_FAILURE_WINDOW_S = env_int("FEDSITE_AUTH_FAILURE_WINDOW_S", 300, minimum=1)
FEDSITE_LOGIN_FAILURE_LIMIT = env_int("FEDSITE_LOGIN_FAILURE_LIMIT", 10, minimum=1)  # per address (x5 per username)
FEDSITE_TOKEN_FAILURE_LIMIT = env_int("FEDSITE_TOKEN_FAILURE_LIMIT", 30, minimum=1)  # per address
# Users may create workspaces (a taken slug is then "not available", throttled); false: only the operator.
FEDSITE_SELF_SERVICE_WORKSPACES = env_bool("FEDSITE_SELF_SERVICE_WORKSPACES", True)
FEDSITE_TRUSTED_PROXIES = env_int("FEDSITE_TRUSTED_PROXIES", 0, minimum=0)  # proxies adding X-Forwarded-For

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.auth.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.drf.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.drf.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"runtime-report": "600/minute"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fedsite API",
    "DESCRIPTION": "Federated learning between organisations: partners, datasets, tickets, jobs, model versions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Typed JSON fields, ticket params per kind, every error status, links between operations.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "apps.core.schema.postprocess"],
    "ENUM_NAME_OVERRIDES": {
        "TicketStatusEnum": "apps.tickets.choices.TicketStatus",
        "JobStatusEnum": "apps.jobs.choices.JobStatus",
        "RoleEnum": "apps.workspaces.choices.Role",
        "PartyRoleEnum": "apps.tickets.choices.PartyRole",
    },
}

# --- Celery (workers/) ---
_broker = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_URL = _broker
if _broker.startswith("filesystem://"):
    _queue = VAR_DIR / "broker" / "queue"
    _processed = VAR_DIR / "broker" / "processed"
    _queue.mkdir(parents=True, exist_ok=True)
    _processed.mkdir(parents=True, exist_ok=True)
    _control = VAR_DIR / "broker" / "control"  # exchange tables; kombu's default is ./control, shared by all
    _control.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "processed_folder": str(_processed),
        "control_folder": str(_control),
        "store_processed": False,
        "polling_interval": env_float("CELERY_FILESYSTEM_POLL_S", 0.1),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "fedsite")

# --- Fedsite ---
FEDSITE_INSTALLATION_NAME = env_str("FEDSITE_INSTALLATION_NAME", "fedsite")
FEDSITE_PUBLIC_URL = env_str("FEDSITE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
FEDSITE_DATA_ROOTS = [
    Path(p).resolve() for p in env_list("FEDSITE_DATA_ROOTS", [str(BASE_DIR / "data"), str(VAR_DIR / "data")])
]
FEDSITE_LAUNCHER = env_choice("FEDSITE_LAUNCHER", "local", ("local", "kubernetes"))
FEDSITE_JOBS_DIR = Path(env_str("FEDSITE_JOBS_DIR", str(VAR_DIR / "jobs"))).resolve()
FEDSITE_PEER_LISTEN = env_str("FEDSITE_PEER_LISTEN", "127.0.0.1:7443")
FEDSITE_PEER_ENDPOINT = env_str("FEDSITE_PEER_ENDPOINT", FEDSITE_PEER_LISTEN)
FEDSITE_RUNTIME_HOST = env_str("FEDSITE_RUNTIME_HOST", "127.0.0.1")
FEDSITE_RUNTIME_PORTS = env_str("FEDSITE_RUNTIME_PORTS", "17000-17999")
FEDSITE_TICKET_TTL_HOURS = env_int("FEDSITE_TICKET_TTL_HOURS", 72, minimum=1)
FEDSITE_INVITATION_TTL_MINUTES = env_int("FEDSITE_INVITATION_TTL_MINUTES", 60, minimum=1)
FEDSITE_CLOCK_SKEW_S = env_int("FEDSITE_CLOCK_SKEW_S", 300, minimum=1)
FEDSITE_JOB_TIMEOUT_S = env_int("FEDSITE_JOB_TIMEOUT_S", 24 * 3600, minimum=60)
FEDSITE_LEADER_WAIT_S = env_int("FEDSITE_LEADER_WAIT_S", 3600, minimum=10)
FEDSITE_RUNTIME_REPORT_URL = env_str("FEDSITE_RUNTIME_REPORT_URL", "")  # default: FEDSITE_PUBLIC_URL
FEDSITE_RUNTIME_BIND = env_str("FEDSITE_RUNTIME_BIND", "")  # default: FEDSITE_RUNTIME_HOST
FEDSITE_RUNTIME_SERVER_NAME = env_str("FEDSITE_RUNTIME_SERVER_NAME", "fedsite-runtime")
# The NATS server whose JetStream subjects stream jobs may name as their source.
FEDSITE_NATS_URL = env_str("FEDSITE_NATS_URL", "nats://127.0.0.1:4222")
FEDSITE_LOCAL_STOP_GRACE_S = env_float("FEDSITE_LOCAL_STOP_GRACE_S", 5.0)
# Local runtimes run this much nicer than the installation (0-19), so approvals and pages stay fast.
FEDSITE_LOCAL_RUNTIME_NICE = env_int("FEDSITE_LOCAL_RUNTIME_NICE", 10, minimum=0, maximum=19)
FEDSITE_PEER_BACKOFF_MAX_S = env_int("FEDSITE_PEER_BACKOFF_MAX_S", 300, minimum=1)
FEDSITE_CERT_DAYS = env_int("FEDSITE_CERT_DAYS", 365, minimum=1)
FEDSITE_K8S_NAMESPACE = env_str("FEDSITE_K8S_NAMESPACE", "fedsite-jobs")
FEDSITE_K8S_IMAGE = env_str("FEDSITE_K8S_IMAGE", "fedsite-runtime:latest")
FEDSITE_K8S_KUBECONFIG = env_str("FEDSITE_K8S_KUBECONFIG", "")  # empty: in-cluster, else ~/.kube/config
FEDSITE_K8S_CONTEXT = env_str("FEDSITE_K8S_CONTEXT", "")
FEDSITE_K8S_SERVICE_TYPE = env_choice("FEDSITE_K8S_SERVICE_TYPE", "ClusterIP", ("ClusterIP", "NodePort"))
FEDSITE_K8S_SERVICE_DOMAIN = env_str("FEDSITE_K8S_SERVICE_DOMAIN", "svc")
FEDSITE_K8S_CPU_REQUEST = env_str("FEDSITE_K8S_CPU_REQUEST", "500m")
FEDSITE_K8S_CPU_LIMIT = env_str("FEDSITE_K8S_CPU_LIMIT", "2")
FEDSITE_K8S_MEMORY_REQUEST = env_str("FEDSITE_K8S_MEMORY_REQUEST", "1Gi")
FEDSITE_K8S_MEMORY_LIMIT = env_str("FEDSITE_K8S_MEMORY_LIMIT", "4Gi")
FEDSITE_K8S_BACKOFF_LIMIT = env_int("FEDSITE_K8S_BACKOFF_LIMIT", 0, minimum=0)
FEDSITE_K8S_TTL_AFTER_FINISHED_S = env_int("FEDSITE_K8S_TTL_AFTER_FINISHED_S", 3600, minimum=0)
FEDSITE_K8S_RUN_AS_USER = env_int("FEDSITE_K8S_RUN_AS_USER", 10001, minimum=1)
FEDSITE_K8S_IMAGE_PULL_POLICY = env_choice(
    "FEDSITE_K8S_IMAGE_PULL_POLICY", "IfNotPresent", ("Always", "IfNotPresent", "Never")
)
FEDSITE_K8S_IMAGE_PULL_SECRET = env_str("FEDSITE_K8S_IMAGE_PULL_SECRET", "")
FEDSITE_K8S_RUNTIME_SERVICE_ACCOUNT = env_str("FEDSITE_K8S_RUNTIME_SERVICE_ACCOUNT", "")
FEDSITE_K8S_DATA_PVC = env_str("FEDSITE_K8S_DATA_PVC", "")
FEDSITE_K8S_DATA_MOUNT = env_str("FEDSITE_K8S_DATA_MOUNT", "")
FEDSITE_K8S_OUTPUT_PVC = env_str("FEDSITE_K8S_OUTPUT_PVC", "")
# Where the workers mount that PVC: the reconciler reads a finished job's result.json there.
FEDSITE_K8S_OUTPUT_MOUNT = env_str("FEDSITE_K8S_OUTPUT_MOUNT", "")
# Partitioned PSI: pods of a side's Indexed Job running at once (0 = all P partitions).
FEDSITE_K8S_PSI_PARALLELISM = env_int("FEDSITE_K8S_PSI_PARALLELISM", 0, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
