"""Site chrome: the 403 page keeps the navigation, a local favicon, and one log line per event (no 403 traceback)."""

import io
import logging

import pytest

from config.logfilters import ForbiddenWithoutTraceback

pytestmark = pytest.mark.django_db


def test_forbidden_page_has_the_navigation_and_says_who_is_signed_in(client, users):
    client.force_login(users["researcher"])
    r = client.get("/carepaths/board/")
    assert r.status_code == 403
    html = r.content.decode()
    assert '<nav aria-label="Main">' in html and 'id="forbidden"' in html and "researcher" in html
    assert 'href="/outcomes/analysis/"' in html  # the researcher's own page is one click away


def test_favicon_is_a_local_svg(client, users):
    client.force_login(users["therapist"])
    html = client.get("/").content.decode()
    assert '<link rel="icon" href="/static/workflow/favicon.svg" type="image/svg+xml">' in html
    r = client.get("/favicon.ico")
    assert r.status_code == 301 and r["Location"] == "/static/workflow/favicon.svg"
    from django.contrib.staticfiles import finders

    assert finders.find("workflow/favicon.svg").endswith("favicon.svg")


def _console():
    handlers = [h for h in logging.getLogger().handlers if any(isinstance(f, ForbiddenWithoutTraceback) for f in h.filters)]
    assert len(handlers) == 1, "one console handler on the root logger"
    return handlers[0]


def test_a_django_log_line_is_printed_once_and_a_403_without_traceback(client, users):
    assert logging.getLogger("django").handlers == [] and logging.getLogger("django.request").handlers == []
    console, out = _console(), io.StringIO()
    old = console.setStream(out)
    try:
        client.force_login(users["researcher"])
        assert client.get("/carepaths/board/").status_code == 403
    finally:
        console.setStream(old)
    text = out.getvalue()
    assert text.count("Forbidden") == 1 and "/carepaths/board/" in text
    assert "Traceback" not in text and "PermissionDenied" not in text
