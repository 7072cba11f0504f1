"""Performance figures of the lab itself, printed, not asserted (`make bench`). The machines
are shared and noisy: every section compares ratios measured in one run.

    python -m tools.bench                       # every section
    python -m tools.bench --only scale          # one section (see --help)
"""
