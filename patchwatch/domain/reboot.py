"""Whether a host needs a reboot, derived from its two inputs in this one place.

The inputs are stored apart on the host and each has one writer: ``reboot_reported``
is the host's own signal (report processing), ``reboot_kernel`` is whether a newer
kernel of the running flavour is installed than the one running (the update
computation). Why apart: when both wrote one flag, every report reset it to the host's
signal until the next computation set it again, and a host with a newer kernel
installed flapped between needing a reboot and not, so an alert with a ``for:`` never
fired. Every reader derives the flag with :func:`reboot_required`.
"""

from __future__ import annotations


def reboot_required(reported: bool | None, newer_kernel: bool | None) -> bool | None:
    """Derive the flag: ``True`` if either input says so, ``None`` if neither says anything.

    ``None`` stands for "unknown" and must never be shown as "no reboot needed": a host
    that sent no signal and whose kernels cannot be compared may well need one.
    """
    if reported or newer_kernel:
        return True
    if reported is None and newer_kernel is None:
        return None
    return False
