"""Vigil: host intrusion detection for Linux on eBPF — who changed what, live."""

__version__ = "0.1.0"
