"""cluster.yaml, deploy/ and docs/cluster.md: checked with Ray's own validator, no cluster started.

`ray up` runs `prepare_config` (merge with the provider's defaults.yaml) and then `validate_config`
(jsonschema against ray/autoscaler/ray-schema.json) before it touches AWS; these tests run the same
two functions from the installed Ray, so a key Ray would reject fails here first.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from faceproc.config import Config, set_value
from tests.conftest import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
RAYJOB_YAML = REPO / "deploy" / "rayjob.yaml"
CRONTAB = REPO / "deploy" / "crontab.txt"
CLUSTER_DOC = REPO / "docs" / "cluster.md"

# Ray's control-plane ports: dashboard + Jobs API, Ray client server, GCS.
RAY_PORTS = (8265, 10001, 6379)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return yaml.safe_load(RAYJOB_YAML.read_text())


# --------------------------------------------------------------------------------------------
# cluster.yaml against Ray's schema


def test_cluster_yaml_passes_rays_validator_as_written(cluster):
    validate_config(copy.deepcopy(cluster))


def test_cluster_yaml_passes_rays_validator_after_defaults_like_ray_up(cluster):
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c.__setitem__("idle_timout_minutes", c.pop("idle_timeout_minutes")),
                     id="misspelled-top-level-key"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"].__setitem__(
            "min_worker", c["available_node_types"]["gpu_worker"].pop("min_workers")),
                     id="misspelled-node-type-key"),
        pytest.param(lambda c: c["available_node_types"]["gpu_worker"].__setitem__(
            "resources", {"CPU": 4, "GPU": 0.5}), id="fractional-node-resource"),
    ],
)
def test_validator_really_rejects_broken_copies(cluster, mutate):
    broken = copy.deepcopy(cluster)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


# --------------------------------------------------------------------------------------------
# cluster.yaml: security


def _opens(rule: dict[str, Any], port: int) -> bool:
    """True when an EC2 IpPermissions rule admits `port` (protocol "-1" means every port)."""
    if str(rule.get("IpProtocol")) == "-1":
        return True
    return int(rule.get("FromPort", -1)) <= port <= int(rule.get("ToPort", -1))


def _sources(rule: dict[str, Any]) -> Iterator[str]:
    for entry in rule.get("IpRanges", []):
        yield entry["CidrIp"]
    for entry in rule.get("Ipv6Ranges", []):
        yield entry["CidrIpv6"]


def test_ingress_is_ssh_only_and_never_from_everywhere(cluster):
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    assert rules, "declare the SSH rule explicitly"
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
        for port in RAY_PORTS:
            assert not _opens(rule, port), f"rule opens Ray port {port}: {rule}"
        for cidr in _sources(rule):
            network = ipaddress.ip_network(cidr)
            assert network.prefixlen > 0, f"SSH must come from an admin CIDR, not {cidr}"
    assert not any(
        "SecurityGroupIds" in node["node_config"] for node in cluster["available_node_types"].values()
    ), "a SecurityGroupIds override would bypass the declared rules"


def test_dashboard_binds_to_loopback_only(cluster):
    starts = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts
    assert "0.0.0.0" not in starts


# --------------------------------------------------------------------------------------------
# cluster.yaml: nodes, install, auth, storage


def test_gpu_worker_type_autoscales_and_declares_its_gpu(cluster):
    head = cluster["head_node_type"]
    workers = {name: t for name, t in cluster["available_node_types"].items() if name != head}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no worker type declares GPU resources"
    for node in gpu.values():
        assert node["node_config"]["InstanceType"].startswith("g5.")
        assert node.get("min_workers", 0) == 0
        assert node["max_workers"] >= 1
    assert "GPU" not in cluster["available_node_types"][head]["resources"]
    assert cluster["idle_timeout_minutes"] > 0
    assert cluster["max_workers"] >= max(t["max_workers"] for t in gpu.values())


def test_every_node_uses_a_deep_learning_ami_and_an_instance_profile(cluster):
    for name, node in cluster["available_node_types"].items():
        config = node["node_config"]
        assert "deeplearning" in config["ImageId"], name
        assert config["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name


# The system Python of each Ubuntu release the Deep Learning AMIs are built on.
UBUNTU_PYTHON = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}


def test_every_nodes_system_python_is_one_faceproc_installs_on(cluster):
    """setup_commands build the venv with the AMI's own python3: pip refuses faceproc on a Python
    outside requires-python (Ubuntu 22.04's 3.10 is one)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    supported = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    for name, node in cluster["available_node_types"].items():
        release = re.search(r"ubuntu-(\d\d\.\d\d)", node["node_config"]["ImageId"])
        assert release, f"{name}: an AMI whose Ubuntu release (and so its Python) is not named"
        assert supported.contains(UBUNTU_PYTHON[release[1]]), (name, release[1], str(supported))


def test_setup_installs_the_working_tree_with_the_gpu_extra(cluster):
    assert cluster["file_mounts"] == {"~/faceproc": "."}
    installs = [c for c in cluster["setup_commands"] if "pip install" in c and "-e" in shlex.split(c)]
    assert installs, "no editable install in setup_commands"
    (install,) = installs
    assert "cd ~/faceproc" in install
    assert ".[gpu]" in shlex.split(install.split("&&")[-1])


def test_token_auth_env_is_set_where_ray_starts(cluster):
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR

    assert AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"  # the variable the installed Ray reads
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = cluster[key]
        (start,) = [c for c in commands if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start, key
        assert "RAY_AUTH_TOKEN_PATH=" in start, key
        # The token file is written from the secret before Ray starts.
        fetch = commands.index(next(c for c in commands if "secretsmanager" in c))
        assert fetch < commands.index(start), key
        assert "auth_token" in commands[fetch]


# --------------------------------------------------------------------------------------------
# deploy/rayjob.yaml and deploy/crontab.txt


def test_rayjob_runs_the_pipeline_on_object_storage(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    entry = shlex.split(spec["entrypoint"])
    assert entry[:2] == ["python", "jobs/pipeline.py"]
    assert entry[entry.index("--input") + 1].startswith("s3://")
    assert entry[entry.index("--output") + 1].startswith("s3://")
    assert spec["shutdownAfterJobFinishes"] is True
    # No `schedule` on RayJob in released KubeRay: scheduling is RayCronJob's job (see the file).
    assert "schedule" not in spec


def test_rayjob_runtime_env_sets_legacy_keras_and_working_dir(rayjob):
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"
    assert runtime_env["working_dir"]


def test_rayjob_cluster_has_a_gpu_worker_group_and_token_auth(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    groups = cluster["workerGroupSpecs"]
    gpu_limits = [
        container["resources"]["limits"].get("nvidia.com/gpu")
        for group in groups
        for container in group["template"]["spec"]["containers"]
    ]
    assert 1 in gpu_limits
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]


def test_crontab_runs_the_incremental_command_nightly_without_overlap():
    lines = [line for line in CRONTAB.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    jobs = [line for line in lines if "=" not in line.split()[0]]  # skip VAR=value lines
    assert len(jobs) == 1
    fields = jobs[0].split(None, 5)
    minute, hour = fields[0], fields[1]
    assert minute.isdigit() and hour.isdigit() and fields[2:5] == ["*", "*", "*"]
    command = fields[5]
    assert "flock -n" in command
    assert re.search(r"\.venv/bin/faceproc run --input \S+ --output \S+ >> logs/faceproc\.log 2>&1", command)
    assert "%" not in command  # cron would turn an unescaped % into a newline


# --------------------------------------------------------------------------------------------
# docs/cluster.md stays consistent with the code


def test_doc_set_overrides_name_real_config_keys(rayjob):
    text = CLUSTER_DOC.read_text() + "\n" + rayjob["spec"]["entrypoint"]
    overrides = re.findall(r"--set\s+([A-Za-z_.]+)=(\S*)", text)
    assert overrides, "docs/cluster.md shows no --set override"
    for key, value in overrides:
        value = value.strip("`'\";\\")
        if not value or value.isupper() or "$" in value:
            value = "1"  # placeholders and shell expansions: only the key is checked
        try:
            set_value(Config(), key, value)
        except Exception as exc:  # ConfigError for unknown keys, type errors for bad values
            pytest.fail(f"--set {key}={value} in the docs does not apply: {exc}")


def test_doc_config_key_mentions_exist():
    mentioned = set(re.findall(r"(?<![/\w])((?:preprocess|train|evaluate)\.[a-z_]+)\b", CLUSTER_DOC.read_text()))
    assert mentioned
    config = Config()
    for dotted in sorted(mentioned):
        section, key = dotted.split(".")
        assert hasattr(getattr(config, section), key), f"docs/cluster.md names unknown config key {dotted}"


def test_doc_runtime_env_json_is_valid_json():
    snippets = re.findall(r"--runtime-env-json\s+'([^']*)'", CLUSTER_DOC.read_text())
    assert snippets
    for snippet in snippets:
        assert json.loads(snippet)["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"
