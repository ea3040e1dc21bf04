"""How many Ray Data callers a pass starts for its hosts (rcs_ray.sampling.passes.callers_for): every host gets a
caller, no caller forwards to more than HOSTS_PER_CALLER, and the callers are as few as that allows."""

import pytest

from rcs_ray.sampling.passes import HOSTS_PER_CALLER, callers_for


@pytest.mark.parametrize(
    "hosts, expected",
    [(1, (1, 1)), (2, (1, 2)), (8, (1, 8)), (9, (2, 5)), (16, (2, 8)), (22, (3, 8)), (64, (8, 8)), (65, (9, 8))],
)
def test_callers_for_hosts(hosts, expected):
    assert HOSTS_PER_CALLER == 8
    assert callers_for(hosts) == expected


@pytest.mark.parametrize("hosts", range(1, 130))
def test_every_host_is_served_by_as_few_callers_as_allowed(hosts):
    size, per = callers_for(hosts)
    assert size * per >= hosts and per <= HOSTS_PER_CALLER  # every host has a caller, none over its share
    assert (size - 1) * HOSTS_PER_CALLER < hosts  # one caller fewer could not serve them all
