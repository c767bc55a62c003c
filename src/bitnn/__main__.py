"""``python -m bitnn`` and the ``bitnn`` command.

Ctrl-C at any moment gives one line and exit status 130: while the modules load (numpy,
PyTorch: seconds), inside a command (the error boundary in :func:`bitnn.cli.main`), and after
the command has finished (a late or second Ctrl-C cannot turn a result into a traceback). The
rule and why it holds are in :mod:`bitnn.interrupts`.
"""

import os
import sys

from bitnn import interrupts  # only signal: Ctrl-C handling is in place within milliseconds


def run() -> None:
    try:
        interrupts.install()
        from bitnn.cli import main  # numpy and the rest load here

        status = main()
        # Each store below follows its statement with no call or loop in between, the only
        # places where Python runs a signal handler.
        interrupts.state["ignore"] = True
    except KeyboardInterrupt:  # before the command's own boundary existed
        interrupts.state["ignore"] = True
        print("bitnn: interrupted", file=sys.stderr)
        status = 130
    except SystemExit:  # argparse: a usage error or --help, already reported
        interrupts.state["ignore"] = True
        raise
    if status == 130:
        # Leave without the interpreter's teardown: a library interrupted halfway through
        # loading (PyTorch's C++ side) may abort there instead of exiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == "__main__":
    run()
