"""Public import path `arelbo.registry`, kept for plugins (docs/extending.md): the module itself is
`arelbo.core.registry`, and this name is the same module object."""

import sys

from arelbo.core import registry as _module

sys.modules[__name__] = _module
