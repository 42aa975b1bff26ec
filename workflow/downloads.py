"""Download filenames: built from record data (an MRN), so never trusted as header text.

A CR or LF in a ``Content-Disposition`` value would end the header (header injection; Django refuses it with a
500), and a quote or semicolon would end the filename parameter. ``safe_filename`` keeps letters, digits, dot,
dash and underscore and replaces the rest with ``_``; ``attachment`` builds the header with Django's own quoting.
"""

import re

from django.utils.http import content_disposition_header

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name, default="download"):
    cleaned = _UNSAFE.sub("_", name).strip("._") or default
    return cleaned[:120]


def attachment(response, filename):
    """Set ``Content-Disposition: attachment`` on ``response`` with a sanitised ``filename``; return it."""
    response["Content-Disposition"] = content_disposition_header(True, safe_filename(filename))
    return response
