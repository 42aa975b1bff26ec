"""``manage.py seed_demo``: load the demo clinic (see ``workflow.pathway.demo``) and print the logins.

Idempotent: on a database that already holds the demo it only ensures the users and prints the logins again.
"""

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from workflow.pathway import demo


class Command(BaseCommand):
    help = "Seed a reproducible demo clinic (dates relative to today) and print the demo logins."

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=demo.DEFAULT_PATIENTS, help=f"clinic size (default {demo.DEFAULT_PATIENTS}, minimum {demo.MIN_PATIENTS})")
        parser.add_argument("--seed", type=int, default=demo.DEFAULT_SEED, help="random seed (default: fixed, so the demo is reproducible)")
        parser.add_argument("--today", type=dt.date.fromisoformat, default=None, help="seed relative to this date (YYYY-MM-DD) instead of today")
        parser.add_argument("--no-extensions", action="store_true", help="skip the DEMO_EXTENSIONS hooks (toxicity, outcomes, plans)")
        parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")

    def handle(self, *args, **options):
        patients, seed, today = options["patients"], options["seed"], options["today"]
        no_extensions, as_json = options["no_extensions"], options["json"]
        verbose = options.get("verbosity", 1) >= 1
        log = self.stdout.write if verbose else None
        if patients < demo.MIN_PATIENTS:
            raise CommandError(f"The demo clinic needs at least {demo.MIN_PATIENTS} patients (every phase and story).")
        # Query logging (DEBUG) costs seconds over the seed's ~20,000 queries and is of no use here.
        with override_settings(DEBUG=False):
            result = demo.seed(patients=patients, seed=seed, today=today, extensions=[] if no_extensions else None, log=log)
        f = result.figures
        if verbose:
            if result.created:
                self.stdout.write(self.style.SUCCESS(f"Demo clinic seeded in {result.seconds:.1f} s."))
            else:
                self.stdout.write("The demo clinic is already loaded; nothing changed.")
            by_status = ", ".join(f"{k} {v}" for k, v in f["courses_by_status"].items())
            self.stdout.write(
                f"{f['patients']} patients, {f['courses']} courses ({by_status}), {f['fractions']} fractions; "
                f"treatment list {f['list_day']}: {f['list_size']} fractions ({f['list_delivered']} delivered so far)."
            )
            self.stdout.write("")
            self.stdout.write("Demo logins (demo data only; change or remove these users on any shared server):")
            self.stdout.write(demo.logins_table(result.users))
        if as_json:
            self.stdout.write(json_line({"created": result.created, "seconds": round(result.seconds, 2), **f}))


def json_line(data):
    return json.dumps(data, default=str, sort_keys=True)
