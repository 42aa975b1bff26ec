"""Number formats of the outcome pages."""

import math

from django import template

register = template.Library()


@register.filter
def pvalue(p, digits=4):
    """A p value to ``digits`` decimals as the tables print it; below the last decimal "< 0.0001" (never "0.0000",
    which reads as "no chance at all"); missing or not finite: "—"."""
    try:
        p, digits = float(p), int(digits)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    floor = 10 ** -digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"
