"""Uploads of whole DICOM series: many files on the import endpoints only, spooled to disk, JSON errors.

Django refuses a multipart request with more than ``DATA_UPLOAD_MAX_NUMBER_FILES`` files (default 100) by a
``TooManyFilesSent`` that becomes an HTML 400. A CT series has 100-300 slices, so the DICOM import page and API
raise that limit to ``RADPATH_DICOM_MAX_FILES`` (default 2000) for their own requests only: the limit is read
through a context variable that only :func:`dicom_upload_limit` sets, every other endpoint keeps Django's.
Files go to temporary files on disk (``TemporaryFileUploadHandler``), never all into memory; any limit that is
still exceeded is answered as ``{"files": [reason]}``."""

import contextlib
import contextvars

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent, ValidationError
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import multipartparser
from rest_framework.parsers import MultiPartParser

_max_files = contextvars.ContextVar("radpath_dicom_max_files", default=None)


class _FileLimitSettings:
    """Django's settings, except DATA_UPLOAD_MAX_NUMBER_FILES inside :func:`dicom_upload_limit`."""

    def __init__(self, wrapped):
        self._wrapped = wrapped

    def __getattr__(self, name):
        if name == "DATA_UPLOAD_MAX_NUMBER_FILES" and _max_files.get() is not None:
            return _max_files.get()
        return getattr(self._wrapped, name)


if not isinstance(multipartparser.settings, _FileLimitSettings):
    multipartparser.settings = _FileLimitSettings(multipartparser.settings)


def max_files():
    return int(getattr(settings, "RADPATH_DICOM_MAX_FILES", 2000))


@contextlib.contextmanager
def dicom_upload_limit():
    token = _max_files.set(max_files())
    try:
        yield
    except TooManyFilesSent:
        raise ValidationError({"files": [f"More than {max_files()} files in one upload: send the series as a zip "
                                          "archive, or import from a server folder."]})
    except (RequestDataTooBig, TooManyFieldsSent) as exc:
        raise ValidationError({"files": [f"The upload is too large ({exc})."]})
    finally:
        _max_files.reset(token)


def spool_to_disk(request):
    """Uploaded files of this request go to temporary files (call before reading ``request.POST/FILES``)."""
    request.upload_handlers = [TemporaryFileUploadHandler(request)]


def uploaded_files(request):
    """[(name, uploaded file)] of a page's multipart POST, many files allowed, on disk."""
    spool_to_disk(request)
    with dicom_upload_limit():
        return [(f.name, f) for f in request.FILES.getlist("files")], request.POST


class DicomMultiPartParser(MultiPartParser):
    """DRF multipart parser with the DICOM file-count limit."""

    def parse(self, stream, media_type=None, parser_context=None):
        with dicom_upload_limit():
            return super().parse(stream, media_type, parser_context)
