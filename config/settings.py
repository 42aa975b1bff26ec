"""RadPath settings, read from the environment.

Every deployment choice is an environment variable so that the same code runs the demo (SQLite, embedded task
queue) and a clinic (PostgreSQL, RQ workers on Redis) unchanged:

- ``DATABASE_URL``: any dj-database-url URL; default an SQLite file under ``var/``.
- ``SECRET_KEY``, ``DEBUG``, ``ALLOWED_HOSTS`` (comma separated).
- ``CLINIC_TIME_ZONE`` (IANA name) and ``CLINIC_HOLIDAY_COUNTRY`` (ISO code for the ``holidays`` package),
  ``CLINIC_HOLIDAY_SUBDIVISION`` (optional state/province).
- ``TASKS_BACKEND``: ``db`` (default, django-tasks-db) or ``rq`` (django-tasks-rq on ``REDIS_URL``).
- ``RADPATH_PSEUDONYM_KEY``: the server secret that keys research pseudonyms (defaults to SECRET_KEY).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RADPATH_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("SECRET_KEY", "radpath-insecure-development-key-change-me")
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "simple_history",
    "django_tasks",
    "django_tasks_db",
    "django_rq",
    "django_tasks_rq",
    "workflow",
    "planning",
    "outcomes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "workflow.middleware.LoginRequiredEverywhere",
]

ROOT_URLCONF = "config.urls"

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
                "workflow.context_processors.roles",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'radpath.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and the task worker share the file without "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE"}
    )
    # Tests use a file, not shared-cache memory, so threads and the live server see real SQLite locking.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-{os.getpid()}.sqlite3")
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # PostgreSQL's JIT compiles a cohort query with correlated subqueries for longer (~0.7 s) than it then runs;
    # queries here are index lookups and aggregates over at most a registry, where JIT never pays off.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = os.environ.get("CLINIC_TIME_ZONE", "America/New_York")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("RADPATH_MEDIA_ROOT", VAR_DIR / "media"))

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Clinic calendar
CLINIC_HOLIDAY_COUNTRY = os.environ.get("CLINIC_HOLIDAY_COUNTRY", "US")
CLINIC_HOLIDAY_SUBDIVISION = os.environ.get("CLINIC_HOLIDAY_SUBDIVISION") or None

RADPATH_PSEUDONYM_KEY = os.environ.get("RADPATH_PSEUDONYM_KEY", SECRET_KEY)
# DICOM import (planning.uploads, planning.dicom_io): files per upload on the import endpoints only (Django's
# DATA_UPLOAD_MAX_NUMBER_FILES stays 100 elsewhere), and the server folder physicists may import from ("" = off).
RADPATH_DICOM_MAX_FILES = int(os.environ.get("RADPATH_DICOM_MAX_FILES", "2000"))
RADPATH_DICOM_IMPORT_ROOT = os.environ.get("RADPATH_DICOM_IMPORT_ROOT", "")
# CT pixels finer than this are binned in-plane on import (a 512 x 512 CT of 0.98 mm -> 256 x 256 of 1.95 mm); 0 keeps them.
RADPATH_DICOM_GRID_MM = float(os.environ.get("RADPATH_DICOM_GRID_MM", "2.0"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["workflow.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "workflow.api_errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "RadPath API",
    "DESCRIPTION": "Radiation-oncology care pathway, IMRT planning and outcomes.",
    "VERSION": "0.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # One schema name per choice set that several fields share.
    "ENUM_NAME_OVERRIDES": {
        "TumourResponseEnum": "outcomes.models.Response",
        "DiseaseStatusEnum": "outcomes.models.DiseaseStatus",
    },
}

# Background jobs: Django's Tasks API (django-tasks backport). The database queue needs no other service;
# TASKS_BACKEND=rq moves the same tasks onto RQ workers on Redis for multi-machine scale.
TASKS_BACKEND = os.environ.get("TASKS_BACKEND", "db")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
if TASKS_BACKEND == "rq":
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}}
elif TASKS_BACKEND == "immediate":
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}}
else:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
RQ_QUEUES = globals().get("RQ_QUEUES", {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}})

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
