"""Helpers for the end-to-end tests in headless Chromium (Debian's, driven by Playwright)."""

import datetime as dt

from django.utils import timezone

from tests.conftest import PASSWORD
from workflow.pathway import calendar

CHROMIUM = "/usr/bin/chromium"
# Playwright's assertions wait 5 s by default; on the 2-core CI machine, with the other xdist process running the
# API contract test, a page (and the query behind it) has taken longer, which failed a correct test.
EXPECT_TIMEOUT_MS = 20_000
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def launch(playwright):
    """Debian's Chromium, headless, without the background services a test does not need; assertions wait up to
    ``EXPECT_TIMEOUT_MS``."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def login(page, base, username, next_path):
    """Log in through the real login form and land on ``next_path``."""
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{next_path}")


def last_treatment_day():
    """Today if the clinic treats today, else the most recent treatment day (so a fraction can be delivered)."""
    day = timezone.localdate()
    while not calendar.is_treatment_day(day):
        day -= dt.timedelta(days=1)
    return day
