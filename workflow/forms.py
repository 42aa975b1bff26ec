"""Form helpers shared by the domains' pages: ``add_service_error`` puts a service's complaint on the field it
names, ``service_error_text`` makes it one line for a banner. The forms themselves are in each domain's ``forms``.
"""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError

from .errors import RuleViolation


def add_service_error(form, exc):
    """Attach a service exception to the form: on the field it names when the form has it, else to the form."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                target = field if field in form.fields else None
                for error in errors:
                    for message in error.messages:
                        form.add_error(target, message if target else f"{field}: {message}" if field != NON_FIELD_ERRORS else message)
        else:
            for message in exc.messages:
                form.add_error(None, message)
    elif isinstance(exc, RuleViolation):
        form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    else:
        raise exc


def service_error_text(exc):
    """One line for a message banner."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return " ".join(f"{m}" for errs in exc.error_dict.values() for e in errs for m in e.messages)
        return " ".join(exc.messages)
    return str(exc)
