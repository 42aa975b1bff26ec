"""Planning fixtures: a course on the C-shape phantom (site "other"), coarse plan inputs, task-worker processes."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import make_course
from workflow.models import Diagnosis

ROOT = Path(__file__).resolve().parents[2]

# Coarse inputs so a real optimisation takes a few seconds: 8 mm voxels, 10 mm beamlets, 5 beams.
FAST = dict(grid_mm=8.0, beamlet_mm=10.0, max_iterations=40)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def immediate_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}}


@pytest.fixture
def db_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@pytest.fixture
def physicist(users):
    return users["physicist"]


@pytest.fixture
def dosimetrist(users):
    return users["dosimetrist"]


@pytest.fixture
def cshape_course(patient):
    dx = Diagnosis.objects.create(patient=patient, site="other", histology="", diagnosed_on=dt.date(2026, 6, 1))
    return make_course(patient, dx, fractions=25, dose=Decimal("2.00"), treated_site="Paraspinal")


def use_redis():
    return os.environ.get("RADPATH_CI_REDIS") == "1"


def redis_url():
    """REDIS_URL with a database of this pytest-xdist worker's own (gw0 -> 1, gw1 -> 2, ...).

    Every worker process listens on a queue named "default"; on one shared Redis database an RQ worker started
    by one xdist process took the other's jobs (and then ran them on the wrong test database), so each xdist
    process gets its own numbered database. Database 0 stays the clinic's.
    """
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{1 + index % 15}"


def database_url():
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Workers:
    """Task-worker subprocesses on the test database: ``db_worker`` (default) or RQ workers (RADPATH_CI_REDIS=1)."""

    def __init__(self, settings, media_root, redis=None):
        self.settings = settings
        self.media_root = media_root
        self.procs = []
        self.extra_env = {}
        self.redis = use_redis() if redis is None else redis
        if self.redis:
            self.extra_env["REDIS_URL"] = redis_url()
            settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
            # django_rq reads RQ_QUEUES on every get_queue(), so this override reaches the backend and the reaper
            settings.RQ_QUEUES = {"default": {"URL": self.extra_env["REDIS_URL"], "DEFAULT_TIMEOUT": 3600}}
            import django_rq

            django_rq.get_queue("default").empty()
        else:
            settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

    def env(self):
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url(),
            TASKS_BACKEND="rq" if self.redis else "db",
            RADPATH_MEDIA_ROOT=str(self.media_root),
            RADPATH_PLAN_HEARTBEAT_SECONDS="0.5",
            DEBUG="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, n=1):
        for _ in range(n):
            if self.redis:
                cmd = [sys.executable, "manage.py", "rqworker", "default", "--job-class", "django_tasks_rq.Job"]
            else:
                cmd = [sys.executable, "manage.py", "db_worker", "--queue-name", "default", "--no-reload",
                       "--no-startup-delay", "--interval", "0.1"]
            log_path = self.media_root.parent / f"worker-{len(self.procs)}.log"
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            proc.log_path = log_path
            self.procs.append(proc)
        return self.procs[-n:]

    # What each worker prints once it polls its queue (db_worker's and RQ's start-up lines).
    READY = ("Starting worker", "Listening on")

    def wait_ready(self, procs=None, timeout=60.0):
        """Block until every worker process has started polling, so a job can go to any of them."""

        def ready():
            for proc in procs or self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"worker exited with {proc.returncode}\n{self.logs()}")
                text = proc.log_path.read_text(errors="replace")
                if not any(marker in text for marker in self.READY):
                    return False
            return True

        wait_for(ready, timeout=timeout, message="the workers to start")

    def kill(self, proc, sig=signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)

    def stop(self):
        """SIGTERM each live worker (RQ's warm shutdown may wait for a job); SIGKILL what is still up after 10 s.

        No worker may outlive its test: a leftover one would take the next test's jobs.
        """
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def logs(self):
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.media_root.parent.glob("worker-*.log")))


@pytest.fixture
def workers(settings, media_root, transactional_db):
    media_root.mkdir(parents=True, exist_ok=True)
    w = Workers(settings, media_root)
    yield w
    w.stop()


@pytest.fixture
def db_workers(settings, media_root, transactional_db):
    """``manage.py db_worker`` processes on the database queue, also in CI's Redis pass (the task table is theirs)."""
    media_root.mkdir(parents=True, exist_ok=True)
    w = Workers(settings, media_root, redis=False)
    yield w
    w.stop()


def wait_for(predicate, timeout=60.0, interval=0.05, message="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")


def make_done_plan(course, user, *, core_gy=15.0, elsewhere_gy=5.0, **inputs):
    """A finished plan on the C-shape phantom with a synthetic dose (Rx in the PTV, ``core_gy`` in the core)."""
    import numpy as np

    from planning import services
    from planning.models import Plan, PlanStatus

    plan = services.create_plan(course, user=user, **dict(FAST, **inputs))
    geo = services.load_geometry(plan)
    dose = np.where(geo.body.mask, elsewhere_gy, 0.0)
    dose[geo.structures["PTV"].mask] = plan.prescription_gy
    dose[geo.structures["Core"].mask] = core_gy
    plan = Plan.objects.get(pk=plan.pk)
    services.store_result(plan, geo, dose, beam_summary=[{"gantry_deg": 0.0, "beamlets": 1, "segments": 1, "mu": 100.0}])
    plan.status = PlanStatus.DONE
    plan.save()
    return plan
