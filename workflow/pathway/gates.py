"""Delivery gates: the rules that can keep a course's next fraction from being delivered.

Each app that can block treatment (plan approval, a toxicity hold, an open blocking care-path task) registers a
function ``gate(course) -> str | None`` returning the reason it blocks, or None. ``delivery_blockers`` asks them
all, so the delivery service never needs to know about the apps that sit on top of it. Approval gates
(``register_approval_gate``; the care path's physics plan check) likewise keep a plan from being approved.
"""

_GATES = []
_APPROVAL_GATES = []


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


def register_approval_gate(func):
    """Register ``gate(course) -> str | None``: a reason the course's plan may not be approved yet."""
    if func not in _APPROVAL_GATES:
        _APPROVAL_GATES.append(func)
    return func


def approval_blockers(course):
    return [reason for reason in (gate(course) for gate in _APPROVAL_GATES) if reason]
