"""Small helpers shared by the benchmarks: Django on a fresh database, timing, peak RSS and the final JSON line.

A benchmark script does::

    from _common import fresh_database, median_seconds, peak_rss_mb, emit_json
    db = fresh_database(args.database_url, label="scheduling")   # before importing any model
    try:
        ...
    finally:
        db.drop()
    emit_json({...})                                               # the last line of output: one JSON object

``fresh_database`` points Django at ``database_url`` (default: a new SQLite file in the temp directory), runs
``django.setup()``, then creates and migrates a database of its own (``radpath_<label>_<pid>`` on PostgreSQL, a
new file on SQLite), so a benchmark never touches an existing database. ``DEBUG`` defaults to off, as in
production: query logging would distort the timings.
"""

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FreshDatabase:
    vendor: str
    name: str
    migrate_seconds: float
    _old_name: str
    _tmpdir: str | None

    def drop(self, keep=False):
        from django.db import connection

        if not keep:
            connection.creation.destroy_test_db(self._old_name, verbosity=0)
        if self._tmpdir and not keep:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def fresh_database(database_url=None, *, label="bench"):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    tmpdir = None
    if not database_url:
        tmpdir = tempfile.mkdtemp(prefix=f"radpath-{label}-")
        database_url = f"sqlite:///{tmpdir}/{label}.sqlite3"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "false")
    import django

    django.setup()
    from django.db import connection

    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        folder = tmpdir or os.path.dirname(str(settings_dict["NAME"])) or tempfile.gettempdir()
        test_name = os.path.join(folder, f"radpath-{label}-{os.getpid()}.sqlite3")
    else:
        test_name = f"radpath_{label}_{os.getpid()}"
    settings_dict.setdefault("TEST", {})["NAME"] = test_name
    started = time.perf_counter()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return FreshDatabase(connection.vendor, test_name, time.perf_counter() - started, old_name, tmpdir)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _status_mb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def current_rss_mb():
    """This process's resident set size now, in MiB (Linux ``VmRSS``; elsewhere the peak so far)."""
    return _status_mb("VmRSS") or peak_rss_mb()


def reset_peak_rss():
    """Reset the peak RSS to the current RSS (Linux: ``/proc/self/clear_refs``), so ``current_peak_rss_mb`` then
    gives the peak of what follows alone. False where that is not possible (use ``peak_rss_mb``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_peak_rss_mb():
    """The peak RSS since ``reset_peak_rss`` (Linux ``VmHWM``), in MiB."""
    return _status_mb("VmHWM") or peak_rss_mb()


def median_seconds(fn, runs, warmup=2, clock=time.perf_counter):
    """Median time of ``fn()`` over ``runs`` calls, after ``warmup`` untimed calls.

    ``clock`` is wall time by default; ``time.process_time`` gives this process's CPU time, which a busy machine
    distorts far less (but which leaves out a database server's own work)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = clock()
        fn()
        times.append(clock() - started)
    return statistics.median(times)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        return False


def emit_json(figures):
    """Print the benchmark's figures as one JSON object: by convention the last line of its output."""
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=True, default=str), flush=True)


if __name__ == "__main__":  # `make bench` runs every benchmarks/*.py; this one is only helpers
    print("benchmarks/_common.py: shared helpers, nothing to run")
