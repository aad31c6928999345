"""compose.yaml and the observability configuration it mounts."""

from __future__ import annotations

import pytest
import yaml

import clihelp
import crosschecks
from outside_tools import REPO_ROOT, require_tool, run

COMPOSE = REPO_ROOT / "compose.yaml"
PROMETHEUS = REPO_ROOT / "observability/prometheus/prometheus.yml"
DATASOURCES = REPO_ROOT / "observability/grafana/provisioning/datasources/datasources.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_matches_the_compose_specification() -> None:
    checker = require_tool("check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_both_services_and_the_observability_stack(compose: dict) -> None:
    assert set(compose["services"]) == {*clihelp.BINARIES, "jaeger", "prometheus", "grafana"}
    for binary in clihelp.BINARIES:
        build = compose["services"][binary]["build"]
        assert (build["context"], build["dockerfile"], build["args"]["SERVICE"]) == (".", "Dockerfile", binary)


# The build args that name a listener's port, and the setting of the binary each must equal.
PORT_ARGS = {"recommendations": {"PORT": "GRPC_PORT", "ADMIN_PORT": "ADMIN_PORT"},
             "marketplace": {"PORT": "HTTP_PORT", "ADMIN_PORT": "ADMIN_PORT"}}


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_build_args_name_the_ports_the_binary_listens_on(binary: str, compose: dict, accepted) -> None:
    args = compose["services"][binary]["build"]["args"]
    assert set(args) == {"SERVICE", *PORT_ARGS[binary]}
    effective = _effective(compose, binary, accepted)
    assert {arg: str(args[arg]) for arg in PORT_ARGS[binary]} == {
        arg: str(effective[setting]) for arg, setting in PORT_ARGS[binary].items()}


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_compose_sets_only_variables_the_binary_accepts(binary: str, compose: dict, accepted) -> None:
    environment = compose["services"][binary].get("environment", {})
    assert sorted(set(environment) - set(accepted[binary])) == []


def _effective(compose: dict, binary: str, accepted) -> dict:
    return {**accepted[binary], **compose["services"][binary].get("environment", {})}


def test_prometheus_scrapes_each_service_on_its_admin_port(compose: dict, accepted) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    for binary in clihelp.BINARIES:
        assert targets[binary] == [f"{binary}:{_effective(compose, binary, accepted)['ADMIN_PORT']}"]


def test_the_marketplace_reaches_recommendations_on_its_grpc_port(compose: dict, accepted) -> None:
    marketplace = _effective(compose, "marketplace", accepted)
    assert marketplace["RECOMMENDATIONS_HOST"] in compose["services"]
    recommendations = _effective(compose, "recommendations", accepted)
    assert str(marketplace["RECOMMENDATIONS_PORT"]) == str(recommendations["GRPC_PORT"])


def test_grafana_datasources_point_at_compose_services(compose: dict) -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert {d["type"] for d in datasources} == {"prometheus", "jaeger"}
    for datasource in datasources:
        host = datasource["url"].split("//", 1)[1].split(":", 1)[0]
        assert host in compose["services"], datasource["url"]


def test_compose_images_are_pinned(compose: dict) -> None:
    problems = [crosschecks.image_problem(s["image"]) for s in compose["services"].values()]
    assert [p for p in problems if p] == []
