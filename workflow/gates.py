"""Delivery gates: the rules that can keep a course's next fraction from being delivered.

Each app that can block treatment (plan approval, a toxicity hold, an open blocking care-path task) registers a
function ``gate(course) -> str | None`` returning the reason it blocks, or None. ``delivery_blockers`` asks them
all, so the delivery service never needs to know about the apps that sit on top of it.
"""

_GATES = []


def register_gate(func):
    if func not in _GATES:
        _GATES.append(func)
    return func


def delivery_blockers(course):
    reasons = []
    for gate in _GATES:
        reason = gate(course)
        if reason:
            reasons.append(reason)
    return reasons
