import subprocess
import sys
import time

import psutil
import pytest

from ruthgen.embedded import cleanup
from ruthgen.embedded.distribution import STUB_NAME


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cleanup, "SHM_DIR", tmp_path)
    return tmp_path


def _fake_stub(prefix: str) -> subprocess.Popen:
    """A process whose command line looks like a stub of the server using ``prefix``."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"/x/{STUB_NAME}", f"{prefix}0000", "echo_0_0"]
    )


def test_new_shm_prefix_is_unique_shell_safe_and_extends_the_backend_prefix():
    first, second = cleanup.new_shm_prefix(), cleanup.new_shm_prefix()
    assert first != second
    assert first.startswith(cleanup.DEFAULT_SHM_PREFIX)
    assert all(c.isalnum() or c == "_" for c in first)


def test_shm_regions_lists_only_regions_with_the_prefix(shm_dir):
    for name in ("mine_a", "mine_b", "other_a"):
        (shm_dir / name).write_bytes(b"")
    assert [p.name for p in cleanup.shm_regions("mine_")] == ["mine_a", "mine_b"]


def test_reap_leftovers_kills_own_stubs_and_removes_own_regions_only(shm_dir):
    mine, other = _fake_stub("mine_"), _fake_stub("other_")
    try:
        (shm_dir / "mine_1").write_bytes(b"")
        (shm_dir / "other_1").write_bytes(b"")
        assert cleanup.stub_pids("mine_") == [mine.pid]
        pids, regions = cleanup.reap_leftovers("mine_", grace_s=0.1)
        assert pids == [mine.pid]
        assert [r.name for r in regions] == ["mine_1"]
        mine.wait(timeout=5)
        assert not psutil.pid_exists(mine.pid)
        assert other.poll() is None
        assert sorted(p.name for p in shm_dir.iterdir()) == ["other_1"]
    finally:
        other.kill()
        other.wait()
        mine.kill()
        mine.wait()


def test_reap_leftovers_waits_for_stubs_that_end_themselves(shm_dir):
    stub = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.3)", f"/x/{STUB_NAME}", "self_0000"]
    )
    time.sleep(0.1)
    pids, _ = cleanup.reap_leftovers("self_", grace_s=5.0)
    assert pids == []
    stub.wait(timeout=5)
