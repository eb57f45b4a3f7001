from __future__ import annotations

import pytest
from lifecycle_fakes import FakeControl, FakeEntries, FakeKiller

from sidecar.control.health import HealthPolicy
from sidecar.control.manager import LifecycleManager
from sidecar.control.recovery import RecoveryPolicy
from sidecar.request.routes import Leases, RouteTable


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def entries() -> FakeEntries:
    return FakeEntries()


@pytest.fixture
def killer() -> FakeKiller:
    return FakeKiller()


@pytest.fixture
def policy() -> RecoveryPolicy:
    return RecoveryPolicy(load_timeout_s=0.5, unload_timeout_s=0.2, drain_timeout_s=30.0, cooldown_s=0.05,
                          max_retries=3, max_consecutive_timeouts=3, hang_check_s=0.05)


@pytest.fixture
def manager(control, entries, killer, policy):
    manager = LifecycleManager(control, entries, RouteTable(), Leases(), policy=policy, stub_killer=killer,
                               health_policy=HealthPolicy(min_requests=5))
    yield manager
