"""What the CLI tests share: ``captum-robust`` run in-process with its output captured."""

import contextlib
import io

from captum_robust.cli import main


def run_cli(argv):
    """``(exit status, stdout, stderr)`` of ``captum_robust.cli.main(argv)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
