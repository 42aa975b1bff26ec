"""Logging filters for the console handler."""

import logging


class ForbiddenWithoutTraceback(logging.Filter):
    """A 403 is the role rule doing its job, not a fault: keep Django's one-line "Forbidden" warning and drop the
    traceback of the PermissionDenied it carries."""

    def filter(self, record):
        if getattr(record, "status_code", None) == 403 and record.exc_info:
            record.exc_info = None
            record.exc_text = None
        return True
