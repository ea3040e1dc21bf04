"""What every worker process of a local Ray runs as it starts (Ray's ``worker_process_setup_hook``,
:func:`rcs_ray.ray_runtime.init_ray`). Imports nothing but ``logging``: every actor and task process pays for it.

Ray Train starts a placement-group cleaner actor with every fit. Once a second it asks Ray's state API whether the
fit's controller still runs, to remove the fit's placement group if the controller died. A local Ray started here
runs without the dashboard that serves that API, so every ask fails with a warning that Ray forwards to the
terminal: one line a second for as long as the fit trains (measured: 10 lines in a two-step local fit). Nothing is
lost by quieting it: a local Ray's placement groups end with the Ray that this process started and stops. The
cleaner's errors still show. A joined cluster is left as it is.
"""

import logging

QUIET = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_workers() -> None:
    """Warnings of :data:`QUIET` loggers are dropped in this worker process; errors pass."""
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
