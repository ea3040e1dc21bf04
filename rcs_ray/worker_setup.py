"""What every worker process of a local Ray runs as it starts (Ray's ``worker_process_setup_hook``,
:func:`rcs_ray.ray_runtime.init_ray`). Every actor and task process pays for it, so it imports nothing Ray's worker
has not imported already.

Ray Train starts a placement-group cleaner actor with every fit. Once a second it asks Ray's state API whether the
fit's controller still runs, to remove the fit's placement group if the controller died. Two things go wrong on a
local Ray started here:

- It runs without the dashboard that serves that API, so every ask fails with a warning that Ray forwards to the
  terminal: one line a second for as long as the fit trains (measured: 10 lines in a two-step local fit). The
  warnings are dropped. Nothing is lost: a local Ray's placement groups end with the Ray that this process started
  and stops. The cleaner's errors still show.
- With another Ray running on the same machine (a ``ray start`` cluster, another command's local Ray), the state
  API cannot tell which Ray to ask: ``ConnectionError: Found multiple active Ray instances``, which the cleaner does
  not expect, so its thread dies with a traceback in the terminal. ``RAY_ADDRESS`` in the worker names its own Ray,
  and anything in the worker that looks for "the" Ray finds this one.

A joined cluster is left as it is.
"""

import logging
import os

QUIET = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def local_worker_setup() -> None:
    """Warnings of :data:`QUIET` loggers are dropped in this worker process (errors pass), and ``RAY_ADDRESS`` names
    the Ray it belongs to."""
    import ray  # the worker's own: already imported

    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
