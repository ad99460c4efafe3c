import sys

from arelbo.cli import main

sys.exit(main())
