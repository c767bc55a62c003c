"""Ctrl-C: one SIGINT handler for a whole ``bitnn`` command, steered by plain assignments.

The command's rule: the first Ctrl-C interrupts (raises :class:`KeyboardInterrupt`) or, while a
training runs, asks it to stop cleanly after the current batch; a second Ctrl-C during that
stop aborts it; once an interruption has been raised or a stop has completed, every further
Ctrl-C is ignored until the process ends, so the one-line report and the exit status stand.

Why assignments rather than swapping handlers with ``signal.signal``: Python runs a pending
handler at function entries, loop back-edges and after calls, so a quick second Ctrl-C can
land inside the call that swaps handlers and leave the old one in place (the test suite saw a
traceback that way). A store into :data:`state` has no such point inside it.

Library use (a notebook, a script calling ``Trainer.run``) keeps Python's own Ctrl-C:
:class:`TrainingStop` swaps a handler in for the training and back, as usual in Python.

Only ``signal`` is imported here: the entry point installs this before numpy and PyTorch load.
"""

from __future__ import annotations

import signal

# ignore: the outcome is decided; training: (stop flag, announce) of the running training;
# held: inside Held() blocks (their Ctrl-C waits in pending until the block has finished)
FRESH = {"ignore": False, "training": None, "held": 0, "pending": False}
state = dict(FRESH)


def _on_ctrl_c(signum, frame) -> None:
    if state["ignore"]:
        return
    if state["held"]:
        state["pending"] = True
        return
    training = state["training"]
    if training is not None and not training[0]["stop"]:
        training[0]["stop"] = True  # before any call: a Ctrl-C at announce() then aborts
        training[1]()
        return
    state["ignore"] = True
    raise KeyboardInterrupt


def install() -> None:
    """Make this process follow the command's rule (the ``bitnn`` entry point does this),
    unless it was started with Ctrl-C ignored (``nohup``, a background job): that stays."""
    state.update(FRESH)  # one C call: no handler runs halfway through it
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_ctrl_c)


class TrainingStop:
    """``with TrainingStop(flag, announce):`` the first Ctrl-C sets ``flag["stop"]`` and calls
    ``announce()`` (the training stops after its batch and saves a checkpoint); a second one
    raises KeyboardInterrupt. Outside the main thread, or where Ctrl-C is ignored, Ctrl-C is
    not this block's to handle."""

    def __init__(self, flag: dict, announce) -> None:
        self.flag, self.announce = flag, announce
        self.swapped, self.previous = False, None

    def __enter__(self) -> TrainingStop:
        import threading  # loaded long before any training; kept off the start-up path

        if threading.current_thread() is not threading.main_thread():
            return self
        current = signal.getsignal(signal.SIGINT)
        if current is _on_ctrl_c:  # inside the bitnn command
            state["training"] = (self.flag, self.announce)
        elif current is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self._library_handler)
            self.swapped = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.swapped:  # None: a handler not set from Python; Python's own is the closest
            signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        elif state["training"] is not None and state["training"][0] is self.flag:
            if exc_type is not None:  # a stop or an abort on its way out: outcome decided
                state["ignore"] = True
            state["training"] = None  # a stop asked after the last batch: Ctrl-C interrupts

    def _library_handler(self, signum, frame) -> None:
        if self.flag["stop"]:
            raise KeyboardInterrupt
        self.flag["stop"] = True
        self.announce()


class Held:
    """``with Held():`` inside the bitnn command, a Ctrl-C during the block interrupts when
    the block has finished instead of inside it. For loading PyTorch: its C++ start-up calls
    back into Python, and a KeyboardInterrupt raised there aborts the whole process
    ("terminate called after throwing an instance of 'pybind11::error_already_set'")."""

    def __enter__(self) -> Held:
        state["held"] += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        state["held"] -= 1
        if not state["held"] and state["pending"]:
            state["pending"] = False
            if exc_type is None and not state["ignore"]:
                state["ignore"] = True
                raise KeyboardInterrupt
