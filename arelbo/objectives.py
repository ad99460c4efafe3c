"""Public import path `arelbo.objectives`, kept for plugins (docs/extending.md): the module itself is
`arelbo.models.objectives`, and this name is the same module object."""

import sys

from arelbo.models import objectives as _module

sys.modules[__name__] = _module
