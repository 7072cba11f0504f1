"""Performance figures of the lab itself, printed, not asserted (`make bench`). The machines
are shared and noisy: every section compares ratios measured in one run.

    python -m pipeline.bench                       # every section
    python -m pipeline.bench --only scale          # one section (see --help)
"""
