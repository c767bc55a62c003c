"""``python -m bitnn`` and the ``bitnn`` command.

Ctrl-C at any moment gives one line and exit status 130: while the modules load (numpy,
PyTorch: seconds), inside a command (the error boundary in :func:`bitnn.cli.main`), and after
the command has finished (a late or second Ctrl-C cannot turn a result into a traceback).
"""

import os
import signal
import sys


def _ignore_ctrl_c() -> None:
    """Ignore further Ctrl-C. One that lands while the handler is being swapped (a second
    Ctrl-C right after the first) raises inside signal.signal itself: set it again, the
    outcome is already decided."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


def run() -> None:
    try:
        from bitnn.cli import main  # numpy and the rest load here

        status = main()
    except KeyboardInterrupt:  # before the command's own boundary existed
        _ignore_ctrl_c()
        print("bitnn: interrupted", file=sys.stderr)
        status = 130
    _ignore_ctrl_c()  # the outcome is decided: no late tracebacks
    if status == 130:
        # Leave without the interpreter's teardown: a library interrupted halfway through
        # loading (PyTorch's C++ side) may abort there instead of exiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == "__main__":
    run()
