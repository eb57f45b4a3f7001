import re

import pytest

from ruthgen.embedded.flags import ALL_MODELS, COMMON_FLAGS, server_args

FLAG = re.compile(r"^--[a-z][a-z0-9-]*(=\S+)?$")  # --key=value, or a bare switch


def test_common_flags_are_plain_key_value_strings():
    assert isinstance(COMMON_FLAGS, tuple)
    assert all(FLAG.match(flag) for flag in COMMON_FLAGS), COMMON_FLAGS
    keys = [flag.split("=", 1)[0] for flag in COMMON_FLAGS if not flag.startswith("--backend-config")]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    "flag",
    [
        "--model-control-mode=explicit",
        "--strict-readiness=false",
        "--exit-on-error=false",
        "--disable-auto-complete-config",
    ],
)
def test_common_flags_hold_flag_when_required_by_every_deployment(flag):
    assert flag in COMMON_FLAGS


def test_server_args_places_repository_backends_addresses_and_ports():
    args = server_args(
        "/r", "/b", "127.0.0.1", http_port=1, grpc_port=2, metrics_port=3, load_models=["a", "b"]
    )
    assert args[:2] == ["--model-repository=/r", "--backend-directory=/b"]
    for flag in COMMON_FLAGS:
        assert flag in args
    for expected in (
        "--http-address=127.0.0.1", "--http-port=1", "--grpc-address=127.0.0.1", "--grpc-port=2",
        "--metrics-address=127.0.0.1", "--metrics-port=3", "--load-model=a", "--load-model=b",
    ):
        assert expected in args


def test_server_args_loads_every_model_when_given_all():
    args = server_args("/r", "/b", "h", 1, 2, 3, load_models=ALL_MODELS)
    assert [a for a in args if a.startswith("--load-model")] == ["--load-model=*"]


def test_server_args_loads_nothing_when_no_names():
    assert not [a for a in server_args("/r", "/b", "h", 1, 2, 3) if a.startswith("--load-model")]


@pytest.mark.parametrize("bad", ["all", ["a", "*"]])
def test_server_args_rejects_load_models_when_neither_names_nor_all(bad):
    with pytest.raises(ValueError):
        server_args("/r", "/b", "h", 1, 2, 3, load_models=bad)


def test_server_args_adds_exit_timeout_shm_prefix_and_extra_when_given():
    args = server_args(
        "/r", "/b", "h", 1, 2, 3, exit_timeout_s=7, shm_region_prefix="p_", extra=["--log-verbose=1"]
    )
    assert "--exit-timeout-secs=7" in args
    assert "--backend-config=python,shm-region-prefix-name=p_" in args
    assert args[-1] == "--log-verbose=1"
