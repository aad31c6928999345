"""Cross-checks: on every real render they find nothing; on a copy of kustomize/ broken on
purpose they find the break."""

from __future__ import annotations

from pathlib import Path

import pytest

import clihelp
import crosschecks
import render

RENDERS = list(render.RENDERS)

# Checks that need only the manifests, and those that need what the binaries accept.
MANIFEST_CHECKS = [crosschecks.check_ports, crosschecks.check_images, crosschecks.check_selectors,
                   crosschecks.check_namespaces]
BINARY_CHECKS = [crosschecks.check_env, crosschecks.check_grace_period, crosschecks.check_listener_ports,
                 crosschecks.check_upstreams]


@pytest.mark.parametrize("check", MANIFEST_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", RENDERS)
def test_the_manifests_agree_with_themselves(name: str, check, docs) -> None:
    assert check(docs[name]) == []


@pytest.mark.parametrize("check", BINARY_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", RENDERS)
def test_the_manifests_agree_with_the_binaries(name: str, check, docs, accepted) -> None:
    assert check(docs[name], accepted) == []


def _broken(tmp_path: Path, name: str, file: str, old: str, new: str) -> list[dict]:
    return render.parse(render.render(name, render.break_copy(tmp_path, file, old, new)))


def test_a_scrape_port_that_is_no_container_port_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base", "base/recommendations.yaml", 'prometheus.io/port: "9464"',
                   'prometheus.io/port: "9999"')
    assert any("prometheus.io/port 9999" in p for p in crosschecks.check_ports(docs))


def test_a_service_target_port_that_is_no_container_port_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base", "base/recommendations.yaml", "targetPort: grpc", "targetPort: grpcs")
    assert any("targetPort grpcs" in p for p in crosschecks.check_ports(docs))


def test_a_probe_on_an_undeclared_port_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base", "base/marketplace.yaml", "path: /readyz\n              port: http-admin",
                   "path: /readyz\n              port: admin")
    assert any("readinessProbe httpGet port admin" in p for p in crosschecks.check_ports(docs))


def test_an_env_var_the_binary_does_not_accept_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/recommendations.yaml", "name: SHUTDOWN_DELAY_SECONDS",
                   "name: SHUTDOWN_DELAY_SECS")
    assert any("does not accept SHUTDOWN_DELAY_SECS" in p for p in crosschecks.check_env(docs, accepted))


def test_an_unaccepted_variable_in_an_overlay_configmap_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "dev", "overlays/dev/kustomization.yaml", "OTEL_TRACES_SAMPLER=",
                   "OTEL_TRACE_SAMPLER=")
    assert any("does not accept OTEL_TRACE_SAMPLER" in p for p in crosschecks.check_env(docs, accepted))


def test_a_grace_period_shorter_than_the_drain_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/recommendations.yaml", "terminationGracePeriodSeconds: 30",
                   "terminationGracePeriodSeconds: 25")
    assert any("terminationGracePeriodSeconds 25" in p for p in crosschecks.check_grace_period(docs, accepted))


def test_the_grace_period_check_reads_the_binary_defaults(tmp_path: Path, accepted) -> None:
    # Without SHUTDOWN_TIMEOUT_SECONDS in the manifest, the binary's default counts.
    root = render.break_copy(tmp_path, "base/marketplace.yaml",
                             '            - name: SHUTDOWN_TIMEOUT_SECONDS\n              value: "20"\n', "")
    path = root / "base/marketplace.yaml"
    path.write_text(path.read_text().replace("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 6"))
    docs = render.parse(render.render("base", root))
    default = accepted["marketplace"]["SHUTDOWN_TIMEOUT_SECONDS"]
    assert any(f"SHUTDOWN_TIMEOUT_SECONDS {default}" in p for p in crosschecks.check_grace_period(docs, accepted))


def test_a_container_port_that_differs_from_the_listener_setting_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/recommendations.yaml", "containerPort: 9464", "containerPort: 9999")
    assert any("ADMIN_PORT is 9464 but container port http-admin is 9999" in p
               for p in crosschecks.check_listener_ports(docs, accepted))


def test_an_upstream_port_that_is_no_service_port_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/marketplace.yaml", 'value: "50051"', 'value: "50052"')
    assert any("RECOMMENDATIONS_PORT=50052" in p for p in crosschecks.check_upstreams(docs, accepted))


def test_an_upstream_host_that_is_no_service_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/marketplace.yaml", "value: recommendations", "value: recommendation")
    assert any("RECOMMENDATIONS_HOST=recommendation " in p for p in crosschecks.check_upstreams(docs, accepted))


def test_an_unpinned_image_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base", "base/kustomization.yaml",
                   "newName: ghcr.io/example/bookshop/marketplace\n    newTag: 0.1.0",
                   "newName: ghcr.io/example/bookshop/marketplace\n    newTag: latest")
    assert any("uses the tag latest" in p for p in crosschecks.check_images(docs))
    assert crosschecks.image_problem("ghcr.io/example/app") is not None
    assert crosschecks.image_problem("localhost:5000/app") is not None
    assert crosschecks.image_problem("localhost:5000/app:1.2") is None
    assert crosschecks.image_problem("app@sha256:" + "a" * 64) is None


def test_a_disruption_budget_selecting_no_pod_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base+hpa-pdb", "components/hpa-pdb/recommendations.yaml",
                   "app.kubernetes.io/name: recommendations", "app.kubernetes.io/name: recommendation")
    assert any("PodDisruptionBudget/recommendations" in p for p in crosschecks.check_selectors(docs))


def test_an_object_outside_the_namespace_is_caught(tmp_path: Path) -> None:
    root = render.break_copy(tmp_path, "overlays/prod/kustomization.yaml", "namespace: bookshop\n", "")
    docs = render.parse(render.render("prod", root))
    assert any(p.startswith("HorizontalPodAutoscaler/recommendations: namespace None")
               for p in crosschecks.check_namespaces(docs))


def test_a_network_policy_selecting_no_pod_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base+network-policies", "components/network-policies/recommendations.yaml",
                   "      app.kubernetes.io/name: recommendations", "      app.kubernetes.io/name: recommendation")
    assert any("NetworkPolicy/recommendations" in p for p in crosschecks.check_selectors(docs))


FAKE_LONG_HELP = """\
The recommendations gRPC service

Usage: recommendations [OPTIONS]

Options:
      --grpc-port <GRPC_PORT>
          Port of the gRPC listener

          [env: GRPC_PORT=]
          [default: 50051]

      --catalog-path <CATALOG_PATH>
          A catalog file instead of the embedded one

          [env: CATALOG_PATH=]

      --log-format <LOG_FORMAT>
          [env: LOG_FORMAT=]
          [possible values: json, text]

  -h, --help
          Print help (see a summary with '-h')
"""

FAKE_SHORT_HELP = """\
Usage: marketplace [OPTIONS]

Options:
      --http-port <HTTP_PORT>  Port of the HTTP listener [env: HTTP_PORT=] [default: 8080]
      --rust-log <RUST_LOG>    Log filter [env: RUST_LOG=debug] [default: info]
  -h, --help                   Print help
"""


def test_help_parsing_reads_env_names_and_defaults_in_both_clap_layouts() -> None:
    assert clihelp.parse_help(FAKE_LONG_HELP) == {"GRPC_PORT": "50051", "CATALOG_PATH": None, "LOG_FORMAT": None}
    assert clihelp.parse_help(FAKE_SHORT_HELP) == {"HTTP_PORT": "8080", "RUST_LOG": "info"}


def test_the_env_check_works_from_help_text_alone(docs) -> None:
    accepted = {"recommendations": clihelp.parse_help(FAKE_LONG_HELP),
                "marketplace": clihelp.parse_help(FAKE_SHORT_HELP)}
    problems = crosschecks.check_env(docs["base"], accepted)
    assert "Deployment/marketplace: marketplace does not accept RECOMMENDATIONS_HOST (not in its --help)" in problems
