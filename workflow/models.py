"""The workflow app's model registry: Django loads an app's models from ``<app>.models``, so this module imports the
models of the app's three domains (``workflow.pathway``, ``workflow.toxicity``, ``workflow.carepaths``).

Code outside the app may keep importing any model from here (``from workflow.models import Course``); code inside
the app imports from its own domain's ``models`` (the pathway's never from here, so there is no import circle).
"""

from .pathway.models import *  # noqa: F401,F403
from .toxicity.models import *  # noqa: F401,F403
from .carepaths.models import *  # noqa: F401,F403
