"""The sequences of temporal models: which camera started one on which copy, and their restarts.

A temporal model's Triton entry uses sequence batching: a camera's first frame for a copy carries
START, the next ones continue its sequence. Triton releases a sequence left idle longer than the
entry's idle limit and refuses its next frame (``SequenceNotStarted``); :meth:`Sequences.restart`
then prepares the resend: the first refused frame restarts the sequence with START, and frames
refused while that restart is under way are resent without START, in order behind it. Each restart
is an epoch of the (copy, camera) sequence.
"""

from __future__ import annotations

from sidecar.request.messages import set_sequence_start
from sidecar.request.records import Pending


class Sequences:
    def __init__(self) -> None:
        self._epochs: dict[tuple[str, str], int] = {}  # started (copy, camera) -> restarts
        self._restarting: dict[tuple[str, str], int] = {}  # (copy, camera) -> epoch whose START is out

    def start(self, name: str, camera_id: str, again: bool = False) -> tuple[bool, int]:
        """(start, epoch): start is True on a camera's first frame for the copy on this sidecar, and
        when the caller says the camera's sequence starts again (``again``: the camera moved here
        from another runtime); epoch counts the sequence's restarts."""
        key = (name, camera_id)
        epoch = self._epochs.get(key)
        if epoch is None:
            self._epochs[key] = 0
            return True, 0
        if again:
            self._epochs[key] = epoch + 1
            return True, epoch + 1
        return False, epoch

    def restart(self, pending: Pending) -> bool:
        """Triton refused ``pending`` because its sequence was released: prepare the resend.

        False when it must not be resent (it was already sent with START).
        """
        if not pending.resendable:
            return False
        pending.resendable = False
        key = (pending.name, pending.request.camera_id)
        current = self._epochs.get(key, 0)
        if current > pending.epoch or self._restarting.get(key) == current:
            pending.epoch = current
            set_sequence_start(pending.message, False)
            return True
        self._epochs[key] = pending.epoch = current + 1
        self._restarting[key] = current + 1
        pending.restarts = True
        set_sequence_start(pending.message, True)
        return True

    def restarted(self, pending: Pending) -> None:
        """``pending``, which restarted its sequence, is answered: the restart is over."""
        key = (pending.name, pending.request.camera_id)
        if self._restarting.get(key) == pending.epoch:
            del self._restarting[key]

    def restarting(self) -> int:
        """How many restarts are under way."""
        return len(self._restarting)
