"""Public import path `arelbo.estimators`, kept for plugins (docs/extending.md): the module itself is
`arelbo.models.estimators`, and this name is the same module object."""

import sys

from arelbo.models import estimators as _module

sys.modules[__name__] = _module
