"""Helpers for the end-to-end tests in headless Chromium (Debian's, driven by Playwright)."""

import datetime as dt

from django.utils import timezone

from tests.conftest import PASSWORD
from workflow.pathway import calendar

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def launch(playwright):
    """Debian's Chromium, headless, without the background services a test does not need."""
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
