"""Page benchmark: the clinic's busiest pages on the demo clinic, through the Django test client, against a
trivial page (the login form) measured in the same run.

    .venv/bin/python benchmarks/pages.py            # demo clinic, 7 timed requests per page
    .venv/bin/python benchmarks/pages.py --quick    # demo clinic, 3 timed requests per page (< 1 min)

Seeds the demo (``seed_demo``) into a fresh SQLite file in the temp directory (or ``--database-url``), logs in as
the role that uses each page and times the full request (middleware, views, templates): the oncologist's care-path
worklist and board, the therapist's treatment list, and the researcher's analysis page (default cohort, overall
survival by multimodal treatment, toxicity block). Targets: worklist and board under 1 s, analysis under 1.5 s.
Prints the median seconds, queries and response size per page, the ratio to the trivial page, and last one JSON line.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, fresh_database, median_seconds, peak_rss_mb  # noqa: E402

PAGES = [
    ("trivial", None, "/accounts/login/"),
    ("worklist", "oncologist", "/carepaths/worklist/"),
    ("board", "oncologist", "/carepaths/board/"),
    ("treatment_list", "therapist", "/treatment/"),
    ("analysis", "researcher", "/outcomes/analysis/?endpoint=os&group_by=multimodal"),
]
TARGETS = {"worklist": 1.0, "board": 1.0, "analysis": 1.5}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed requests per page instead of 7")
    parser.add_argument("--patients", type=int, default=None, help="demo clinic size (default: the demo's 60)")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7

    db = fresh_database(args.database_url, label="pages")
    try:
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        class QueryCounter:
            """Counts every query the request runs (an execute wrapper: independent of DEBUG and the query log)."""

            def __init__(self):
                self.count = 0

            def __call__(self, execute, sql, params, many, context):
                self.count += 1
                return execute(sql, params, many, context)

        started = time.perf_counter()
        call_command("seed_demo", verbosity=0, **({"patients": args.patients} if args.patients else {}))
        seed_seconds = time.perf_counter() - started
        clients = {}
        for _, role, _ in PAGES:
            if role not in clients:
                clients[role] = Client()
                if role:
                    clients[role].force_login(User.objects.get(username=role))
        figures = {"database": db.vendor, "runs": runs, "seed_seconds": round(seed_seconds, 1)}
        for name, role, url in PAGES:
            client = clients[role]
            queries = QueryCounter()
            started = time.perf_counter()
            with connection.execute_wrapper(queries):
                response = client.get(url)
            figures[f"{name}_first_s"] = round(time.perf_counter() - started, 4)  # cold: first request of the page
            assert response.status_code == 200, (url, response.status_code)
            seconds = median_seconds(lambda: client.get(url), runs, warmup=1)
            figures[f"{name}_s"] = round(seconds, 4)
            figures[f"{name}_queries"] = queries.count
            figures[f"{name}_kb"] = round(len(response.content) / 1024, 1)
        trivial = figures["trivial_s"]
        print(f"demo clinic seeded in {seed_seconds:.1f} s ({db.vendor}); median of {runs} requests per page")
        print(f"{'page':16} {'median s':>9} {'x trivial':>10} {'queries':>8} {'KiB':>8}  target")
        for name, _, url in PAGES:
            s = figures[f"{name}_s"]
            figures[f"{name}_ratio"] = round(s / trivial, 1) if name != "trivial" else 1.0
            target = TARGETS.get(name)
            verdict = "" if target is None else (f"< {target} s " + ("met" if s < target else "MISSED"))
            print(f"{name:16} {s:9.3f} {figures[f'{name}_ratio']:10.1f} {figures[f'{name}_queries']:8d} {figures[f'{name}_kb']:8.1f}  {verdict}")
        figures["targets_met"] = all(figures[f"{n}_s"] < t for n, t in TARGETS.items())
        figures["peak_rss_mb"] = peak_rss_mb()
    finally:
        db.drop()
    emit_json(figures)


if __name__ == "__main__":
    main()
