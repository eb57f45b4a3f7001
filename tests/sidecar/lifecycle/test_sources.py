"""The two entry sources against real plugins and a real repository build (no Triton needed)."""

from __future__ import annotations

import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ruthgen.manifest import load_manifest
from ruthgen.writer import build_repository
from sidecar.control.sources import PluginFolderSource, RepositorySource, StageError, parse_copy_name
from sidecar.control.watcher import Change, ManifestWatcher
from tests.sidecar.abuse import until
from tests.sidecar.conftest import write_plugin


def config_name(entry) -> str:
    parsed = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return parsed.name


@pytest.fixture
def folders(tmp_path):
    models, repository = tmp_path / "models", tmp_path / "repo"
    write_plugin(models, "alpha")
    write_plugin(models, "broken", format="gif")
    return models, repository


def test_plugin_folder_source_renders_the_second_copy_under_its_own_name(folders):
    models, repository = folders
    source = PluginFolderSource(models, repository, "cpu")
    assert source.versions() == {("alpha", "1.0.0"), ("broken", "1.0.0")}
    assert source.copies(("alpha", "1.0.0")) == ("alpha__1.0.0", "alpha__1.0.0__b")
    first = source.stage(("alpha", "1.0.0"), "alpha__1.0.0")
    second = source.stage(("alpha", "1.0.0"), "alpha__1.0.0__b")
    assert (first.triton_name, second.triton_name) == ("alpha__1.0.0", "alpha__1.0.0__b")
    assert config_name(repository / "alpha__1.0.0") == "alpha__1.0.0"
    assert config_name(repository / "alpha__1.0.0__b") == "alpha__1.0.0__b"
    manifest = load_manifest(repository)
    assert [m["triton_name"] for m in manifest["models"] if m["state"] == "VALID"] == ["alpha__1.0.0"]
    assert parse_copy_name("alpha__1.0.0__b") == ("alpha", "1.0.0")
    source.discard("alpha__1.0.0__b")
    assert not (repository / "alpha__1.0.0__b").exists()


def test_plugin_folder_source_reports_an_invalid_plugin_with_its_check(folders):
    models, repository = folders
    source = PluginFolderSource(models, repository, "cpu")
    check = source.check(("broken", "1.0.0"))
    assert not check.valid and check.reason.startswith("unknown_input_format:")
    with pytest.raises(StageError, match="unknown_input_format"):
        source.stage(("broken", "1.0.0"), "broken__1.0.0__b")


def test_plugin_folder_source_digest_changes_with_the_files(folders):
    models, repository = folders
    source = PluginFolderSource(models, repository, "cpu")
    before = source.digest(("alpha", "1.0.0"))
    (models / "alpha" / "1.0.0" / "inference.py").write_text("def load(c):\n    return 1\n")
    assert source.digest(("alpha", "1.0.0")) != before


def test_repository_source_reads_versions_and_validity_from_the_manifest(folders):
    models, repository = folders
    source = RepositorySource(repository)
    assert source.versions() == set() and source.signature() is None
    build_repository(models, repository)
    assert source.versions() == {("alpha", "1.0.0"), ("broken", "1.0.0")}
    assert source.copies(("alpha", "1.0.0")) == ("alpha__1.0.0",)
    assert source.check(("alpha", "1.0.0")).contract.input.format == "jpeg"
    assert "unknown_input_format" in source.check(("broken", "1.0.0")).reason
    entry = source.stage(("alpha", "1.0.0"), "alpha__1.0.0")
    assert entry.valid and entry.triton.max_batch_size == 0
    with pytest.raises(StageError):
        source.stage(("alpha", "1.0.0"), "alpha__1.0.0__b")
    source.discard("alpha__1.0.0")
    source.forget(("alpha", "1.0.0"))
    assert (repository / "alpha__1.0.0" / "config.pbtxt").is_file(), "a read-only repository is never written"


def test_repository_source_digest_follows_a_rebuild(folders):
    models, repository = folders
    build_repository(models, repository)
    source = RepositorySource(repository)
    before = source.digest(("alpha", "1.0.0"))
    (models / "alpha" / "1.0.0" / "inference.py").write_text("def load(c):\n    return 2\n")
    build_repository(models, repository)
    assert source.digest(("alpha", "1.0.0")) != before


async def test_manifest_watcher_reports_the_versions_a_rebuild_changed(folders):
    models, repository = folders
    build_repository(models, repository)
    seen: list[list[Change]] = []

    async def on_change(changes):
        seen.append(changes)

    class Source(RepositorySource):
        """Counts the watcher's looks at the manifest: one when it starts, then one per interval."""

        looks = 0

        def signature(self):
            self.looks += 1
            return super().signature()

    source = Source(repository)
    watcher = ManifestWatcher(source, on_change, interval_s=0.02)
    watcher.start()
    try:
        assert await until(lambda: source.looks >= 2, 30)  # it has read the versions it starts from
        shutil.rmtree(models / "broken")
        write_plugin(models, "gamma")
        build_repository(models, repository)
        assert await until(lambda: seen, 30)
    finally:
        await watcher.stop()
    assert seen == [[Change("broken", "1.0.0"), Change("gamma", "1.0.0")]]
