"""Scheduling benchmark: book a year of a 6-linac clinic through ``book_course`` and time the daily list.

    .venv/bin/python benchmarks/scheduling.py            # ~1,500 courses, ~39,000 fractions (a few minutes)
    .venv/bin/python benchmarks/scheduling.py --quick    # 150 courses (under a minute)
    .venv/bin/python benchmarks/scheduling.py --database-url postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/scheduling.py --quick --profile   # cProfile of the booking loop

It creates its own database (a new SQLite file by default; ``radpath_scheduling_<pid>`` on the server of
``--database-url``), books courses starting on successive working days of a year (--quick: 150 courses over 25 days, the same
density; a realistic mix of 5 to 39
fractions, 15/20/30-minute appointments, preferred times across the day) and reports:

- courses and fractions booked per second (each ``book_course`` its own transaction, as in the application);
- the daily-list query (``workflow.pathway.scheduling.daily_list(day)`` fully evaluated, patient and machine read) on the
  busiest days, median over ``--list-runs`` runs, in ms and as a ratio to a trivial query (``Machine.objects.count()``
  and ``SELECT 1``) timed the same way on the same database in the same run;
- peak RSS. The last line of output is one JSON object with every figure.
"""

import argparse
import cProfile
import datetime as dt
import io
import pstats
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, emit_json, fresh_database, median_seconds, peak_rss_mb  # noqa: E402

# (fractions, dose per fraction, technique, minutes, weight): ~26 fractions per course on average.
MIX = [
    (28, "1.80", "IMRT", 20, 25),
    (25, "2.00", "VMAT", 15, 20),
    (30, "2.00", "VMAT", 15, 15),
    (35, "2.00", "VMAT", 15, 15),
    (39, "2.00", "VMAT", 15, 5),
    (20, "3.00", "VMAT", 15, 8),
    (10, "3.00", "3DCRT", 15, 5),
    (5, "4.00", "3DCRT", 15, 4),
    (5, "7.00", "SBRT", 30, 3),
]
FULL_COURSES = 1500
FIRST_DAY = dt.date(2027, 1, 4)  # a Monday; fixed so every run books the same year


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="150 courses: a smoke run in under a minute")
    parser.add_argument("--courses", type=int, default=None, help="courses to book (default 1500, or 150 with --quick)")
    parser.add_argument("--linacs", type=int, default=6)
    parser.add_argument("--database-url", default=None, help="server to create the benchmark database on (default: SQLite file)")
    parser.add_argument("--list-runs", type=int, default=None, help="timed runs of the daily list (median reported; default 50, 20 with --quick)")
    parser.add_argument("--profile", action="store_true", help="cProfile the booking loop and print where the time goes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    return parser.parse_args(argv)


def setup_clinic(n_linacs, n_courses, rng):
    from workflow.models import Course, Machine, Patient

    for i in range(1, n_linacs + 1):
        techniques = ["IMRT", "VMAT", "3DCRT"] + (["SBRT"] if i <= 2 else [])
        Machine.objects.create(name=f"Linac {i}", techniques=techniques)
    patients = Patient.objects.bulk_create(
        Patient(mrn=f"BENCH{i:06d}", given_name="Bench", family_name=f"Patient {i}", birth_date=dt.date(1950, 1, 1) + dt.timedelta(days=i))
        for i in range(n_courses)
    )
    weights = [m[-1] for m in MIX]
    courses = []
    for p in patients:
        fractions, dpf, technique, minutes, _ = rng.choices(MIX, weights)[0]
        courses.append(
            Course(
                patient=p, intent="curative", technique=technique, treated_site="Benchmark", fractions_planned=fractions,
                dose_per_fraction_gy=Decimal(dpf), total_dose_gy=Decimal(dpf) * fractions, fraction_minutes=minutes,
            )
        )
    # bulk_create: no post_save hooks (care paths) - the benchmark times booking, not course creation.
    return Course.objects.bulk_create(courses)


def working_days(first, count):
    from workflow.pathway.calendar import ClinicCalendar

    calendar = ClinicCalendar()
    days, day = [], first
    while len(days) < count:
        if calendar.is_open(day):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def book_all(courses, rng):
    from workflow.models import Machine
    from workflow.pathway.scheduling import book_course

    linacs = list(Machine.objects.order_by("name"))
    # A year of treatment days for the full load; a smaller load keeps the same density (courses started per
    # day, hence machine occupancy and daily-list size) over proportionally fewer days.
    days = working_days(FIRST_DAY, max(5, round(250 * len(courses) / FULL_COURSES)))
    times = [dt.time(h, m) for h in range(7, 18) for m in (0, 15, 30, 45)]
    latencies, fractions = [], 0
    step = max(1, len(courses) // 10)
    for i, course in enumerate(courses):
        if i and i % step == 0:
            print(f"  {i} courses booked ...", flush=True)
        start = days[i * len(days) // len(courses)]
        capable = [m for m in linacs if m.supports(course.technique)]
        machine = rng.choice(capable) if rng.random() < 0.7 else None
        t0 = time.perf_counter()
        booking = book_course(course, start, preferred_time=rng.choice(times), machine=machine, allow_past=True)
        latencies.append(time.perf_counter() - t0)
        fractions += len(booking.fractions)
    return latencies, fractions


def measure_lists(runs):
    from django.db import connection
    from django.db.models.functions import TruncDate
    from django.db.models import Count
    from django.utils import timezone

    from workflow.models import Fraction, Machine
    from workflow.pathway.scheduling import daily_list

    tz = timezone.get_current_timezone()
    busiest = list(
        Fraction.objects.annotate(day=TruncDate("starts_at", tzinfo=tz)).values("day").annotate(n=Count("pk")).order_by("-n", "day")[:5]
    )
    days = [row["day"] for row in busiest]

    def evaluate(day):
        return [(f.course.patient.mrn, f.machine.name, f.starts_at, f.status) for f in daily_list(day)]

    sizes = {str(d): len(evaluate(d)) for d in days}
    per_day = max(1, runs // len(days))
    list_times = []
    for d in days:
        list_times.append(median_seconds(lambda: evaluate(d), per_day))
    # Per-day medians, then the median across the busy days: the figure reported.
    list_median = statistics.median(list_times)

    # The same query's SQL alone (execute + fetch rows, no model instances): splits database time from ORM time.
    def raw(day):
        sql, params = daily_list(day).query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    sql_median = statistics.median(median_seconds(lambda: raw(d), per_day) for d in days)

    def select_one():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    count_median = median_seconds(lambda: Machine.objects.count(), runs)
    select_median = median_seconds(select_one, runs)
    # The same ratio in CPU time of this process: steadier on a shared machine; on SQLite (in-process) it is the
    # whole cost, on PostgreSQL it leaves out the server's share.
    cpu = time.process_time
    list_cpu = statistics.median(median_seconds(lambda: evaluate(d), per_day, clock=cpu) for d in days)
    count_cpu = median_seconds(lambda: Machine.objects.count(), runs, clock=cpu)
    return {
        "busy_days": [str(d) for d in days],
        "list_sizes": sizes,
        "daily_list_ms": round(list_median * 1000, 3),
        "daily_list_sql_only_ms": round(sql_median * 1000, 3),
        "machine_count_ms": round(count_median * 1000, 4),
        "select1_ms": round(select_median * 1000, 4),
        "daily_list_vs_count": round(list_median / count_median, 1),
        "daily_list_vs_select1": round(list_median / select_median, 1),
        "daily_list_cpu_ms": round(list_cpu * 1000, 3),
        "daily_list_vs_count_cpu": round(list_cpu / count_cpu, 1) if count_cpu else None,
    }


def main(argv=None):
    args = parse_args(argv)
    n_courses = args.courses or (150 if args.quick else FULL_COURSES)
    list_runs = args.list_runs or (20 if args.quick else 50)
    db = fresh_database(args.database_url, label="scheduling")
    try:
        from django.db import connection

        rng = random.Random(args.seed)
        print(f"Database: {connection.vendor} {db.name} (migrated in {db.migrate_seconds:.1f} s)")
        with Timer() as t_setup:
            courses = setup_clinic(args.linacs, n_courses, rng)
        print(f"Clinic: {args.linacs} linacs, {n_courses} courses created in {t_setup.seconds:.1f} s")
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        cpu0 = time.process_time()
        with Timer() as t_book:
            latencies, n_fractions = book_all(courses, rng)
        cpu_book = time.process_time() - cpu0
        if profiler:
            profiler.disable()
        latencies.sort()
        booking = {
            "courses": n_courses,
            "fractions": n_fractions,
            "booking_seconds": round(t_book.seconds, 2),
            # CPU time of this process: the figure to compare when the machine is shared (wall time includes waiting
            # for the CPU, and on PostgreSQL for the server).
            "booking_cpu_seconds": round(cpu_book, 2),
            "courses_per_cpu_s": round(n_courses / cpu_book, 1),
            "courses_per_s": round(n_courses / t_book.seconds, 1),
            "fractions_per_s": round(n_fractions / t_book.seconds, 0),
            "book_course_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "book_course_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1),
        }
        print(
            f"Booked {n_courses} courses / {n_fractions} fractions in {t_book.seconds:.1f} s: "
            f"{booking['courses_per_s']} courses/s, {booking['fractions_per_s']:.0f} fractions/s "
            f"(book_course p50 {booking['book_course_p50_ms']} ms, p95 {booking['book_course_p95_ms']} ms; "
            f"{cpu_book:.1f} CPU s in this process)"
        )
        lists = measure_lists(list_runs)
        print(
            f"Daily list on the busiest days ({', '.join(f'{d}: {n}' for d, n in lists['list_sizes'].items())} fractions): "
            f"median {lists['daily_list_ms']} ms = {lists['daily_list_vs_count']}x Machine.objects.count() "
            f"({lists['machine_count_ms']} ms), {lists['daily_list_vs_select1']}x SELECT 1 ({lists['select1_ms']} ms); "
            f"its SQL alone {lists['daily_list_sql_only_ms']} ms; in CPU time {lists['daily_list_cpu_ms']} ms = "
            f"{lists['daily_list_vs_count_cpu']}x Machine.objects.count()"
        )
        if profiler:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(15)
            print(out.getvalue())
        figures = {
            "benchmark": "scheduling",
            "quick": bool(args.quick),
            "database": connection.vendor,
            "linacs": args.linacs,
            **booking,
            **lists,
            "migrate_seconds": round(db.migrate_seconds, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
        print(f"Peak RSS {figures['peak_rss_mb']} MiB")
    finally:
        db.drop(keep=args.keep)
    emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
