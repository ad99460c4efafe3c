"""Public import path `arelbo.nets`, kept for plugins (docs/extending.md): the module itself is
`arelbo.models.nets`, and this name is the same module object."""

import sys

from arelbo.models import nets as _module

sys.modules[__name__] = _module
