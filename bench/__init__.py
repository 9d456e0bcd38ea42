"""`make bench`: pyprobe side by side with the bcc tools and bpftrace
(`python -m bench`, from the repo root; main.py says what runs in what
order). Nothing is imported here: the bench's helpers run as `python -m
bench.fine` and `python -m bench.floor`, which import this first.
"""
