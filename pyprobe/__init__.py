"""pyprobe: Linux network observability on eBPF (bcc)."""

__version__ = "0.1.0"
