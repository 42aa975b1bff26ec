"""A live RadPath server on 127.0.0.1 with a seeded small demo clinic, for contract tests over HTTP.

The server runs in a subprocess (``manage.py runserver --noreload``, DEBUG off) on its own SQLite file in a
temporary folder, so what schemathesis creates, edits and voids never touches the test database or another run.
Plan jobs are queued in that database and never run (no worker), so no request waits for an optimisation.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "radpath-demo"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(var_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "TASKS_BACKEND")}
    env.update(
        RADPATH_VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir / 'contract.sqlite3'}",
        TASKS_BACKEND="db",
        DEBUG="0",
        # plain HTTP on loopback: production's HTTPS redirect and Secure-only cookies off, and no API throttle
        # (schemathesis sends thousands of requests a minute as one user)
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        SECURE_HSTS_SECONDS="0",
        RADPATH_API_RATE_USER="1000000/minute",
        ALLOWED_HOSTS="127.0.0.1",
        SECRET_KEY="radpath-contract-test-key-not-secret-0123456789abcdef",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)


def seed_clinic(var_dir, patients=12):
    """Migrate a new clinic in ``var_dir`` and seed its demo patients (the database and any media files)."""
    env = server_env(Path(var_dir))
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo", "--patients", str(patients))


def copy_clinic(seeded_dir, var_dir):
    """A clinic of its own in ``var_dir``: a copy of one ``seed_clinic`` made (cheaper than migrating and seeding
    again, and the same data)."""
    seeded_dir, var_dir = Path(seeded_dir), Path(var_dir)
    shutil.copy2(seeded_dir / "contract.sqlite3", var_dir / "contract.sqlite3")
    if (seeded_dir / "media").is_dir():
        shutil.copytree(seeded_dir / "media", var_dir / "media", dirs_exist_ok=True)


@contextlib.contextmanager
def live_clinic(var_dir, patients=12, seeded=False):
    """Yield the base URL of a seeded server; stop it afterwards. ``seeded``: ``var_dir`` already holds a clinic
    (``copy_clinic``); otherwise it is migrated and seeded first."""
    var_dir = Path(var_dir)
    env = server_env(var_dir)
    if not seeded:
        seed_clinic(var_dir, patients)
    port = free_port()
    log = open(var_dir / "server.log", "w")
    proc = subprocess.Popen(
        # gunicorn, the production server the README names: it reads chunked request bodies (the development
        # server does not, so a refusal sent before the body was read left the body's last chunk to be parsed as
        # the next request, a "network error" that is no error of ours) and sets TCP_NODELAY (the development
        # server's Nagle wait on every response's second write cost 40 ms a request)
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "2", "--timeout", "150", "--access-logfile", "-",
         # no cap on the request line here: gunicorn's own 4,094-byte cap answers a plain HTML 400 before the
         # application sees the request (the API's handling of a 5 kB query string is what is under test)
         "--limit-request-line", "0"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                requests.get(base + "/accounts/login/", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still booting
                if proc.poll() is not None:
                    raise RuntimeError((var_dir / "server.log").read_text())
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def session_headers(base, username, password=DEMO_PASSWORD):
    """Log in through the login page; the session cookie and CSRF token as request headers."""
    session = requests.Session()
    page = session.get(base + "/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    session.post(
        base + "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": base + "/accounts/login/"},
        timeout=10,
    )
    cookies = session.cookies.get_dict()
    if "sessionid" not in cookies:
        raise RuntimeError(f"login as {username} failed")
    return {"Cookie": f"sessionid={cookies['sessionid']}; csrftoken={cookies['csrftoken']}", "X-CSRFToken": cookies["csrftoken"]}
