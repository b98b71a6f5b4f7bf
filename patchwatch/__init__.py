"""patchwatch's domain core: everything the receiver, scheduler and exporter share."""

__version__ = "0.1.0"
