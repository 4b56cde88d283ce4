"""``python -m captum_robust.cli`` and ``torchrun ... -m captum_robust.cli``: the ``captum-robust`` command."""

import sys

from captum_robust.cli import main

sys.exit(main())
