"""Prefect orchestration of the DVC pipeline (docs/prefect.md).

Offline defaults are set here, before Prefect is imported anywhere in the process, so neither a
flow run, `python -m flows.serve` nor a worker's flow process phones home. An explicit setting in
the environment still wins.
"""

import os

for _key, _value in (
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("DO_NOT_TRACK", "1"),
    ("DVC_NO_ANALYTICS", "1"),
    # A loaded machine needs more than the default 20 s to start an ephemeral API server.
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"),
):
    os.environ.setdefault(_key, _value)
