"""Registry import benchmark: a CSV of 10,000 patients through ``import_registry`` (validation, covariates, audit
history rows, derived outcomes), next to a peer measured in the same run on the same file: ``pandas.read_csv``
plus a plain ``bulk_create`` of the same rows (no validation, no history, no derivation) into the same tables.

    .venv/bin/python benchmarks/registry_import.py                 # 10,000 patients, SQLite temp file
    .venv/bin/python benchmarks/registry_import.py --quick         # 2,000 patients (< 1 min)
    .venv/bin/python benchmarks/registry_import.py --database-url postgres://postgres@127.0.0.1:5432/bench

The file: per patient a patient row (with four covariates of a registry's data dictionary: two numeric, two
categorical), one RT course, two follow-up imaging rows (response recorded) and either a death or a last-contact
row, like a GBSG2-style trial registry. Target: 10,000 patients in < 10 s. The last line is ONE JSON object.

Checked, not only timed: the import's counts equal the file's and the peer's (rows per table), every inserted
record has its ``+`` audit row, the covariate values sum to the file's, and the derived outcomes equal what the
file implies (best response PR for every course, first progression on the PD follow-ups, last contact on the
latest follow-up or last-known-alive date). Queries are counted by an execute wrapper (``CaptureQueriesContext``
would log them: on SQLite that quotes every parameter with extra ``SELECT QUOTE(?)`` queries, which roughly
doubled the measured time); the peak RSS of the import alone is measured where Linux allows resetting it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import current_peak_rss_mb, current_rss_mb, emit_json, fresh_database, peak_rss_mb, reset_peak_rss  # noqa: E402

VARIABLES = [("tsize", "numeric", {"unit": "mm", "minimum": 0, "maximum": 200}),
             ("pnodes", "numeric", {"unit": "nodes", "minimum": 0, "maximum": 100}),
             ("tgrade", "categorical", {"levels": ["I", "II", "III"]}),
             ("menostat", "categorical", {"levels": ["Pre", "Post"]})]


def registry_csv(n, seed=7):
    from outcomes.registry_import import COLUMNS

    rng = random.Random(seed)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS + [v[0] for v in VARIABLES], lineterminator="\n")
    w.writeheader()
    counts = {"patients": 0, "courses": 0, "followups": 0, "deaths": 0}
    expected = {"progressions": 0, "last_contact_days": 0, "tsize_sum": 0}
    for i in range(1, n + 1):
        mrn = f"B{i:06d}"
        dx = dt.date(2005, 1, 1) + dt.timedelta(days=rng.randrange(3650))
        patient = {"record_type": "patient", "mrn": mrn, "sex": rng.choice("MF"), "site": "breast",
                   "diagnosed_on": dx.isoformat(), "given_name": "P", "family_name": f"Case{i}",
                   "birth_date": dt.date(dx.year - rng.randint(30, 80), 6, 1).isoformat(),
                   "tsize": rng.randint(3, 120), "pnodes": rng.randint(0, 30), "tgrade": rng.choice(["I", "II", "III"]),
                   "menostat": rng.choice(["Pre", "Post"])}
        w.writerow(patient)
        expected["tsize_sum"] += patient["tsize"]
        start = dx + dt.timedelta(days=40)
        w.writerow({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant", "technique": "3DCRT",
                    "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25", "rt_start": start.isoformat()})
        day = start
        for resp in ("PR", rng.choice(["SD", "PD"])):
            day += dt.timedelta(days=rng.randint(80, 200))
            w.writerow({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": day.isoformat(),
                        "imaging": "CT", "response": resp})
        expected["progressions"] += resp == "PD"
        end = day + dt.timedelta(days=rng.randint(1, 900))
        if rng.random() < 0.45:
            w.writerow({"record_type": "death", "mrn": mrn, "date": end.isoformat(), "cause": "disease"})
            counts["deaths"] += 1
            expected["last_contact_days"] += (day - start).days  # the last follow-up (a death is no contact)
        else:
            w.writerow({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": end.isoformat(),
                        "last_known_alive": end.isoformat()})
            counts["followups"] += 1
            expected["last_contact_days"] += (end - start).days
        counts["patients"] += 1
        counts["courses"] += 1
        counts["followups"] += 2
    return out.getvalue(), counts, expected


TABLES = ("Patient", "Diagnosis", "Course", "CourseOutcome", "FollowUpAssessment", "Death", "CovariateValue")


def table_counts():
    from outcomes.models import CourseOutcome, CovariateValue, Death, FollowUpAssessment
    from workflow.models import Course, Diagnosis, Patient

    models = {"Patient": Patient, "Diagnosis": Diagnosis, "Course": Course, "CourseOutcome": CourseOutcome,
              "FollowUpAssessment": FollowUpAssessment, "Death": Death, "CovariateValue": CovariateValue}
    return {name: models[name].objects.count() for name in TABLES}, models


def check_import(counts, expected, peer_counts, n):
    """The import's rows equal the file's and the peer's; audit rows; covariate values and derived outcomes as the
    file implies. Raises AssertionError naming what differs."""
    from django.db.models import Sum

    from outcomes.models import CourseOutcome, CovariateValue

    got, models = table_counts()
    assert got == peer_counts, (got, peer_counts)
    assert got["Patient"] == counts["patients"] and got["Course"] == counts["courses"], got
    assert got["FollowUpAssessment"] == counts["followups"] and got["Death"] == counts["deaths"], got
    assert got["CovariateValue"] == n * len(VARIABLES), got
    for name, model in models.items():
        if hasattr(model, "history"):
            hist = model.history.filter(history_type="+").count()
            assert hist == got[name], f"{name}: {hist} audit rows for {got[name]} records"
    tsize = CovariateValue.objects.filter(variable__name="tsize").aggregate(s=Sum("number"))["s"]
    assert tsize == expected["tsize_sum"], (tsize, expected["tsize_sum"])
    outcomes = CourseOutcome.objects.all()
    assert outcomes.filter(best_response="PR").count() == n, "best response PR for every course"
    assert outcomes.exclude(first_progression_date=None).count() == expected["progressions"]
    days = sum((c - s).days for c, s in outcomes.values_list("last_contact_date", "rt_start"))
    assert days == expected["last_contact_days"], (days, expected["last_contact_days"])
    return got


def peer(text, registry):
    """pandas.read_csv + bulk_create of the same rows into the same tables, no checks, history or derivation."""
    import pandas as pd
    from django.db import transaction

    from outcomes.models import CourseOutcome, CovariateValue, Death, FollowUpAssessment
    from workflow.models import Course, Diagnosis, Patient

    started, cpu = time.perf_counter(), time.process_time()
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    variables = {v.name: v for v in registry.variables.all()}

    class Rollback(Exception):
        pass

    try:
        with transaction.atomic():
            p = df[df.record_type == "patient"]
            pats = Patient.objects.bulk_create(
                [Patient(mrn="X" + r.mrn, given_name=r.given_name, family_name=r.family_name,
                         birth_date=dt.date.fromisoformat(r.birth_date), sex=r.sex) for r in p.itertuples()], batch_size=1000)
            pid = {r.mrn: q.pk for r, q in zip(p.itertuples(), pats)}
            diags = Diagnosis.objects.bulk_create(
                [Diagnosis(patient_id=pid[r.mrn], site=r.site, diagnosed_on=dt.date.fromisoformat(r.diagnosed_on))
                 for r in p.itertuples()], batch_size=1000)
            did = {r.mrn: d.pk for r, d in zip(p.itertuples(), diags)}
            CovariateValue.objects.bulk_create(
                [CovariateValue(variable=v, patient_id=pid[r.mrn],
                                number=float(getattr(r, name)) if v.kind == "numeric" else None,
                                level="" if v.kind == "numeric" else getattr(r, name))
                 for r in p.itertuples() for name, v in variables.items()], batch_size=1000)
            c = df[df.record_type == "course"]
            courses = Course.objects.bulk_create(
                [Course(patient_id=pid[r.mrn], diagnosis_id=did[r.mrn], intent=r.intent, technique=r.technique,
                        treated_site=r.treated_site, total_dose_gy=r.total_dose_gy, fractions_planned=int(r.fractions),
                        dose_per_fraction_gy=round(float(r.total_dose_gy) / int(r.fractions), 2),
                        status="completed", name=f"Registry {r.course_ref}") for r in c.itertuples()], batch_size=1000)
            cid = {r.mrn: x.pk for r, x in zip(c.itertuples(), courses)}
            CourseOutcome.objects.bulk_create(
                [CourseOutcome(course_id=cid[r.mrn], patient_id=pid[r.mrn], rt_start_recorded=dt.date.fromisoformat(r.rt_start))
                 for r in c.itertuples()], batch_size=1000)
            f = df[df.record_type == "followup"]
            FollowUpAssessment.objects.bulk_create(
                [FollowUpAssessment(patient_id=pid[r.mrn], course_id=cid[r.mrn], date=dt.date.fromisoformat(r.date),
                                    imaging=r.imaging or "none", override_response=r.response) for r in f.itertuples()],
                batch_size=1000)
            d = df[df.record_type == "death"]
            Death.objects.bulk_create([Death(patient_id=pid[r.mrn], date=dt.date.fromisoformat(r.date), cause=r.cause)
                                       for r in d.itertuples()], batch_size=1000)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            counts, _models = table_counts()  # outside the timing
            raise Rollback
    except Rollback:
        pass
    return seconds, cpu_seconds, counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 patients")
    ap.add_argument("--patients", type=int, default=None)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    n = args.patients or (2000 if args.quick else 10000)
    db = fresh_database(args.database_url, label="regimport")
    try:
        import gc

        from django.db import connection

        from outcomes.models import CourseOutcome, Registry, RegistryVariable
        from outcomes.registry_import import import_registry

        reg = Registry.objects.create(code="bench", name="Benchmark registry")
        for name, kind, extra in VARIABLES:
            RegistryVariable.objects.create(registry=reg, name=name, kind=kind, description=name, **extra)
        text, counts, expected = registry_csv(n)
        peer_s, peer_cpu, peer_counts = peer(text, reg)
        queries = []

        def count(execute, sql, params, many, context):
            queries.append(1)
            return execute(sql, params, many, context)

        gc.collect()
        rss_before, run_peak = current_rss_mb(), peak_rss_mb()  # resetting the peak resets ru_maxrss too
        own_peak = reset_peak_rss()
        with connection.execute_wrapper(count):
            started, cpu = time.perf_counter(), time.process_time()
            summary = import_registry(text, registry="bench")
            import_s, import_cpu = time.perf_counter() - started, time.process_time() - cpu
        import_peak = peak_rss_mb() if not own_peak else current_peak_rss_mb()
        assert {k: v for k, v in summary.to_dict().items() if k != "covariate_values"} == counts, summary.to_dict()
        check_import(counts, expected, peer_counts, n)
        derived = CourseOutcome.objects.exclude(best_response="").count()
        if not args.quick:  # the peer twice (before and after), its better run kept
            again = peer(text, reg)
            peer_s, peer_cpu = min(peer_s, again[0]), min(peer_cpu, again[1])
        load = os.getloadavg()[0]
    finally:
        db.drop()
    peer_best = peer_s
    run_peak = max(run_peak, peak_rss_mb(), import_peak)
    print(f"{db.vendor}: {n:,} patients ({len(text) / 2**20:.1f} MB, {sum(counts.values()):,} rows + "
          f"{n * len(VARIABLES):,} covariate values): import {import_s:.2f} s in {len(queries):,} queries "
          f"({n / import_s:,.0f} patients/s); peer pandas.read_csv + bulk_create {peer_best:.2f} s "
          f"-> {import_s / peer_best:.1f}x; CPU time {import_cpu:.2f} s vs {peer_cpu:.2f} s -> {import_cpu / peer_cpu:.1f}x "
          f"(load average {load:.1f} on {os.cpu_count()} cores); {derived:,} courses with a derived best response "
          f"(counts, audit rows, covariates and derived outcomes checked); peak RSS during the import {import_peak} MiB "
          f"({import_peak - rss_before:+.1f} MiB over the {rss_before} MiB before it), of the whole run {run_peak} MiB")
    emit_json({"benchmark": "registry_import", "vendor": db.vendor, "patients": n, "rows": sum(counts.values()),
               "file_mb": round(len(text) / 2**20, 2), "covariate_values": n * len(VARIABLES),
               "import_seconds": round(import_s, 3), "queries": len(queries), "peer_seconds": round(peer_best, 3),
               "ratio_vs_peer": round(import_s / peer_best, 2), "target_seconds_for_10000": 10,
               "import_cpu_seconds": round(import_cpu, 3), "peer_cpu_seconds": round(peer_cpu, 3),
               "cpu_ratio_vs_peer": round(import_cpu / peer_cpu, 2), "load_average": round(load, 2),
               "derived_courses": derived, "checked": True, "import_peak_rss_mb": import_peak,
               "import_rss_growth_mb": round(import_peak - rss_before, 1), "peak_rss_mb": run_peak})


if __name__ == "__main__":
    main()
