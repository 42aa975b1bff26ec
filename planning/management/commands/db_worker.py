"""``manage.py db_worker``: django-tasks-db's worker, which also fails the jobs of workers that were killed.

A worker killed mid-job (SIGKILL, OOM, a lost machine) leaves its plan RUNNING and its task row RUNNING for ever.
This worker runs ``planning.services.reap_stale_plans`` when it starts and then every
``RADPATH_REAP_INTERVAL_SECONDS`` (default: half the stale limit ``RADPATH_PLAN_STALE_SECONDS``), in a thread of
its own: a plan whose heartbeat stopped longer ago than the limit turns failed ("Worker lost: ...", retryable) and
its task row failed with the same reason. Every worker does it, so one surviving worker is enough.

It overrides django-tasks-db's command of the same name (``planning`` comes before ``django_tasks_db`` in
INSTALLED_APPS) and takes the same options.
"""

import logging
import os
import threading

from django.db import close_old_connections, connection
from django_tasks_db.management.commands import db_worker

from planning.services import reap_stale_plans, stale_after_seconds

log = logging.getLogger("planning.worker")


def reap_interval_seconds():
    value = os.environ.get("RADPATH_REAP_INTERVAL_SECONDS")
    return float(value) if value else max(stale_after_seconds() / 2, 0.5)


def reap_once():
    try:
        for plan in reap_stale_plans():
            log.warning("plan %s: %s", plan.pk, plan.failure_reason)
    except Exception:  # a locked or unreachable database for a moment must not stop the worker
        log.warning("reaping stale plan jobs failed", exc_info=True)


def start_reaper(stop=None):
    stop = stop or threading.Event()

    def loop():
        while not stop.wait(reap_interval_seconds()):
            close_old_connections()
            reap_once()
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name="stale-job-reaper", daemon=True)
    thread.start()
    return stop


class Command(db_worker.Command):
    help = db_worker.Command.help + "; it also fails the plan jobs of killed workers, at start and periodically."

    def handle(self, *args, **options):
        reap_once()
        if not options.get("batch"):  # a --batch pass ends when the queue is empty: the start is enough
            start_reaper()
        return super().handle(*args, **options)
