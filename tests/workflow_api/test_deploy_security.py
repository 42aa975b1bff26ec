"""Deployment security (issue 13: Secure cookies, HSTS and SSL redirect could not be set from the environment, so
``check --deploy`` kept 4 warnings; no Content-Security-Policy; no Cache-Control on patient pages).

Rules: with DEBUG off the safe value of every HTTPS setting is the default and each is an environment variable;
``manage.py check --deploy`` is clean with the production variables the README documents; every page carries a
CSP whose nonce is the one on the page's inline scripts and styles; every response to a signed-in user and every
API response is ``Cache-Control: no-store, private``.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[2]

# The production environment the README's Configuration section documents (values are examples).
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k3Jq9vX2mT8pL5wR7nB4cY6hF1dG0sA9zQ2xE5uI8oP3aS7dF4gH6jK1lZ0",
    "ALLOWED_HOSTS": "radpath.clinic.example",
    "CSRF_TRUSTED_ORIGINS": "https://radpath.clinic.example",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def _run(args, env_extra, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RADPATH_VAR_DIR": str(tmp_path / "var"), **env_extra}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_check_deploy_still_catches_an_insecure_override(tmp_path):
    """The same check fails when the environment turns a protection off: the test above can fail."""
    env = dict(PRODUCTION_ENV, SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="false")
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, tmp_path)
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


def _settings_in(env, tmp_path):
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({k: getattr(s, k) "
        "for k in ['SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', "
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER']}))"
    )
    result = _run(["-c", code], {"DJANGO_SETTINGS_MODULE": "config.settings", **env}, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_defaults_and_environment_overrides(tmp_path):
    assert _settings_in(PRODUCTION_ENV, tmp_path) == {
        "SECURE_SSL_REDIRECT": True, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }
    overridden = _settings_in(dict(PRODUCTION_ENV, SECURE_HSTS_SECONDS="3600", SECURE_HSTS_PRELOAD="0"), tmp_path)
    assert overridden["SECURE_HSTS_SECONDS"] == 3600 and overridden["SECURE_HSTS_PRELOAD"] is False
    development = _settings_in({"DEBUG": "1"}, tmp_path)
    assert development["SECURE_SSL_REDIRECT"] is False and development["SECURE_HSTS_SECONDS"] == 0


def _csp(response):
    return dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip())


@pytest.mark.django_db
def test_pages_carry_a_csp_whose_nonce_is_on_the_inline_script(web, course, clinic):
    response = web("oncologist").get(reverse("toxicity-new") + f"?course={course.pk}")
    assert response.status_code == 200
    policy = _csp(response)
    assert policy["default-src"] == "'self'" and policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" not in policy["script-src"]
    nonce = re.search(r"'nonce-([^']+)'", policy["script-src"]).group(1)
    html = response.content.decode()
    scripts = re.findall(r"<script(?![^>]*application/json)([^>]*)>", html)
    assert scripts and all(f'nonce="{nonce}"' in attrs for attrs in scripts), scripts
    assert f'<style nonce="{nonce}">' in html
    # a second response gets a fresh nonce
    again = _csp(web("oncologist").get(reverse("toxicity-new") + f"?course={course.pk}"))
    assert nonce not in again["script-src"]


@pytest.mark.django_db
def test_patient_pages_and_api_responses_are_not_cached(web, api, users, patient):
    for response in (
        web("oncologist").get(reverse("patient-detail", args=[patient.pk])),
        api("oncologist").get("/api/patients/"),
        APIClient().get("/api/patients/"),  # refused, and not cached either
    ):
        directives = {d.strip() for d in response["Cache-Control"].split(",")}
        assert {"no-store", "private"} <= directives, response["Cache-Control"]


@pytest.mark.django_db
def test_token_authenticated_api_responses_are_not_cached(users, patient):
    from knox.models import AuthToken

    _, token = AuthToken.objects.create(users["oncologist"])
    response = APIClient(HTTP_AUTHORIZATION=f"Token {token}").get(f"/api/patients/{patient.pk}/")
    assert response.status_code == 200 and response.json()["mrn"] == patient.mrn
    assert "no-store" in response["Cache-Control"]
