"""RadPath settings, read from the environment.

Every deployment choice is an environment variable so that the same code runs the demo (SQLite, embedded task
queue) and a clinic (PostgreSQL, RQ workers on Redis) unchanged:

- ``DATABASE_URL``: any dj-database-url URL; default an SQLite file under ``var/``.
- ``SECRET_KEY``, ``DEBUG``, ``ALLOWED_HOSTS`` (comma separated).
- ``CLINIC_TIME_ZONE`` (IANA name) and ``CLINIC_HOLIDAY_COUNTRY`` (ISO code for the ``holidays`` package),
  ``CLINIC_HOLIDAY_SUBDIVISION`` (optional state/province).
- ``TASKS_BACKEND``: ``db`` (default, django-tasks-db) or ``rq`` (django-tasks-rq on ``REDIS_URL``).
- ``RADPATH_PSEUDONYM_KEY``: the server secret that keys research pseudonyms (defaults to SECRET_KEY).
- ``RADPATH_MIN_COHORT``: the minimum number of patients in any de-identified output (default 10).
- ``RADPATH_MAX_UPLOAD_MB``: the largest upload accepted (default 100 MB; larger: HTTP 413).
"""

import datetime as dt
import os
from pathlib import Path

import dj_database_url
from csp import constants as csp_constants

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
    "drf_spectacular_sidecar",  # swagger-ui served from the package: /api/docs/ works offline, no CDN code
    "simple_history",
    # the project's apps come before django_tasks_db: planning's db_worker (which also fails the jobs of killed
    # workers) overrides the library's command of the same name
    "workflow",
    "planning",
    "outcomes",
    "django_tasks",
    "django_tasks_db",
    "django_rq",
    "django_tasks_rq",
    "axes",
    "knox",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "workflow.middleware.RefuseNulInQuery",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "workflow.middleware.NoStoreForSignedIn",
    "simple_history.middleware.HistoryRequestMiddleware",
    "workflow.middleware.LoginRequiredEverywhere",
    # last: turns a lockout (django-axes) into its 429 response
    "axes.middleware.AxesMiddleware",
]

# HTTPS in production. Each is an environment variable; with DEBUG off the safe value is the default, so a
# deployment that sets only SECRET_KEY, ALLOWED_HOSTS and DEBUG=0 passes `manage.py check --deploy`.
PRODUCTION = not DEBUG
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
# Behind a TLS-terminating proxy that sets the header (and strips it from clients): "HTTP_X_FORWARDED_PROTO,https".
_proxy_ssl = [part.strip() for part in os.environ.get("SECURE_PROXY_SSL_HEADER", "").split(",") if part.strip()]
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl) if len(_proxy_ssl) == 2 else None
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", 12 * 3600))  # one clinic day
SECURE_REFERRER_POLICY = "same-origin"

# Content-Security-Policy (django-csp): scripts and <style> blocks only from this site or with the per-response
# nonce ({{ request.csp_nonce }}), no plugins, no framing. Style attributes stay allowed (they cannot run code).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", csp_constants.NONCE],
        "style-src": ["'self'", csp_constants.NONCE],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

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

# Clinic accounts: Django's whole set, 12 characters at least (RADPATH_PASSWORD_MIN_LENGTH).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": int(os.environ.get("RADPATH_PASSWORD_MIN_LENGTH", "12"))},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Lockout of repeated wrong passwords (django-axes; workflow.auth): after RADPATH_LOGIN_FAILURE_LIMIT failures for
# one username, or from one client IP, logins for it are refused (429) for RADPATH_LOGIN_COOLOFF_MINUTES, on the
# login page, the admin and the API's HTTP Basic. Behind a proxy set RADPATH_PROXY_COUNT (the number of proxies
# that append to X-Forwarded-For) so the client's address, not the proxy's, is counted.
AUTHENTICATION_BACKENDS = [
    "workflow.auth.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("RADPATH_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = dt.timedelta(minutes=float(os.environ.get("RADPATH_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = int(os.environ["RADPATH_PROXY_COUNT"]) if os.environ.get("RADPATH_PROXY_COUNT") else None
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_ALLOWED_CORS_ORIGINS = ""  # the lockout answer to a script is for this site only

LANGUAGE_CODE = "en-gb"
TIME_ZONE = os.environ.get("CLINIC_TIME_ZONE", "America/New_York")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("RADPATH_MEDIA_ROOT", VAR_DIR / "media"))

# CACHE_URL=redis://host:6379/1 shares API throttle counts between web processes; default: per-process memory.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# API tokens (django-rest-knox, workflow.auth): POST /api/auth/token/ with HTTP Basic once.
REST_KNOX = {"TOKEN_TTL": dt.timedelta(hours=float(os.environ.get("RADPATH_API_TOKEN_HOURS", "10"))), "AUTO_REFRESH": False}

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
# De-identified outputs (exports, analyses, figures, toxicity aggregates) cover at least this many patients; smaller
# groups of a grouped analysis are suppressed (outcomes.disclosure).
RADPATH_MIN_COHORT = int(os.environ.get("RADPATH_MIN_COHORT", "10"))
# Registry CSV uploads: refused above this size with HTTP 413. Files above 2.5 MB are spooled to a temporary
# file on disk, never held in memory; non-file request bodies stay capped at Django's 2.5 MB.
RADPATH_MAX_UPLOAD_MB = int(os.environ.get("RADPATH_MAX_UPLOAD_MB", "100"))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# CT pixels finer than this are binned in-plane on import (a 512 x 512 CT of 0.98 mm -> 256 x 256 of 1.95 mm); 0 keeps them.
RADPATH_DICOM_GRID_MM = float(os.environ.get("RADPATH_DICOM_GRID_MM", "2.0"))
# Independent dose check (planning.recalculation): CT voxels are combined by integer factors towards this calculation
# grid before the imported RT Plan is recalculated (4 mm: a 1.95 mm CT is calculated on 3.9 mm); 0 keeps the CT grid.
RADPATH_DOSE_CHECK_GRID_MM = float(os.environ.get("RADPATH_DOSE_CHECK_GRID_MM", "4.0"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "knox.auth.TokenAuthentication",
        "workflow.auth.ThrottledBasicAuthentication",
    ],
    # Per signed-in user and per anonymous client; "token" is POST /api/auth/token/. Counts live in the cache
    # (CACHE_URL: Redis shares them between web processes, the default local memory counts per process).
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("RADPATH_API_RATE_ANON", "60/minute"),
        "user": os.environ.get("RADPATH_API_RATE_USER", "1200/minute"),
        "token": os.environ.get("RADPATH_API_RATE_TOKEN", "10/minute"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["workflow.permissions.RolePermission"],
    # JSON bodies: nesting depth capped and NUL characters refused with the field named (workflow/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "workflow.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "workflow.openapi.RadPathAutoSchema",
    "EXCEPTION_HANDLER": "workflow.api_errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "RadPath API",
    "DESCRIPTION": "Radiation-oncology care pathway, IMRT planning and outcomes.",
    "VERSION": "0.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # swagger-ui and redoc from drf-spectacular-sidecar's static files, never a CDN (offline, pinned code).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The schema agrees with the responses (workflow/openapi.py; schemathesis checks it in tests/api_contract/).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "workflow.openapi.postprocess"],
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

# One console handler on the root logger. Django's own "django" logger gets no handler of its own (its default
# console handler plus propagation to the root printed every line twice); a refused request (403) is one warning
# line, not a traceback (config.logfilters.ForbiddenWithoutTraceback).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"forbidden_without_traceback": {"()": "config.logfilters.ForbiddenWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["forbidden_without_traceback"]}},
    "loggers": {"django": {"handlers": [], "level": os.environ.get("LOG_LEVEL", "WARNING"), "propagate": True}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
