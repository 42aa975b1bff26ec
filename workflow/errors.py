"""Exceptions raised by the pathway's service functions."""


class RuleViolation(Exception):
    """The request breaks a clinical or scheduling rule (HTTP 400). ``field`` names the input at fault."""

    code = "rule_violation"

    def __init__(self, message, field=None, code=None):
        super().__init__(message)
        self.field = field
        if code:
            self.code = code


class ConflictError(RuleViolation):
    """The request clashes with the current state, e.g. a slot another booking took first (HTTP 409)."""

    code = "conflict"
