"""`pyprobe export`: the probes as a Prometheus exporter daemon."""
