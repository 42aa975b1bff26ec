"""Mark plans whose worker died (running, no heartbeat for PLANNING_STALE_SECONDS) failed and retryable.

Run it from cron or a systemd timer next to the workers; plan-status reads run the same reaper."""

from django.core.management.base import BaseCommand

from planning.services import reap_stale_plans, stale_after_seconds


class Command(BaseCommand):
    help = "Fail running plans whose job stopped sending heartbeats (the worker died)."

    def add_arguments(self, parser):
        parser.add_argument("--stale-after", type=float, default=None, help="Seconds without a heartbeat (default: settings)")

    def handle(self, *args, stale_after=None, **options):
        limit = stale_after_seconds() if stale_after is None else stale_after
        reaped = reap_stale_plans(stale_after=limit)
        for plan in reaped:
            self.stdout.write(f"plan {plan.pk} v{plan.version} ({plan.course}): {plan.failure_reason}")
        self.stdout.write(f"{len(reaped)} stale plan(s) marked failed (limit {limit:g} s).")
