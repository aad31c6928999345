"""Cross-checks: on every real render they find nothing; on a copy of kustomize/ broken on
purpose they find the break."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import clihelp
import crosschecks
import network_policies
import render
import service_checks

RENDERS = list(render.RENDERS)

# Checks that need only the manifests, and those that need what the binaries accept.
MANIFEST_CHECKS = [crosschecks.check_ports, crosschecks.check_images, crosschecks.check_selectors,
                   crosschecks.check_namespaces, network_policies.check_network_policies,
                   service_checks.check_service_ports, service_checks.check_service_accounts,
                   service_checks.check_disruption_budgets]
BINARY_CHECKS = [crosschecks.check_env, crosschecks.check_grace_period, crosschecks.check_listener_ports,
                 crosschecks.check_upstreams, service_checks.check_probes, service_checks.check_scrape_annotations]

# Renders whose images must be pinned by digest, not only by tag.
PINNED_BY_DIGEST = {"prod"}


@pytest.mark.parametrize("check", MANIFEST_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", RENDERS)
def test_the_manifests_agree_with_themselves(name: str, check, docs) -> None:
    assert check(docs[name]) == []


@pytest.mark.parametrize("check", BINARY_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", RENDERS)
def test_the_manifests_agree_with_the_binaries(name: str, check, docs, accepted) -> None:
    assert check(docs[name], accepted) == []


def _broken(tmp_path: Path, name: str, file: str, old: str, new: str) -> list[dict]:
    return render.broken_docs(tmp_path, name, file, old, new)


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}, expected once"
    path.write_text(text.replace(old, new))


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


def test_a_container_not_named_after_its_image_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/marketplace.yaml", "- name: marketplace\n          image: marketplace",
                   "- name: web\n          image: marketplace")
    assert crosschecks.check_env(docs, accepted) == [
        "Deployment/marketplace: container web runs the marketplace image; name it marketplace"]


def test_a_container_of_ours_running_another_image_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "base", "base/kustomization.yaml", "newName: ghcr.io/example/bookshop/marketplace",
                   "newName: ghcr.io/example/bookshop/shop")
    assert crosschecks.check_env(docs, accepted) == [
        "Deployment/marketplace: container marketplace runs ghcr.io/example/bookshop/shop:0.1.0, not the marketplace image"]


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


def test_prod_pins_every_image_by_digest(docs) -> None:
    for name in PINNED_BY_DIGEST:
        assert crosschecks.check_images(docs[name], require_digest=True) == []


def test_an_image_pinned_only_by_tag_in_prod_is_caught(tmp_path: Path, docs) -> None:
    # The real dev render uses a tag: fine there, not where a digest is required.
    assert crosschecks.check_images(docs["dev"]) == []
    assert any("not pinned by digest" in p for p in crosschecks.check_images(docs["dev"], require_digest=True))
    root = render.break_copy(tmp_path, "overlays/prod/kustomization.yaml",
                             "  - name: ghcr.io/example/bookshop/marketplace\n    digest: ", "  - name: unused\n    digest: ")
    broken = render.parse(render.render("prod", root))
    assert any("marketplace:0.1.0 is not pinned by digest" in p
               for p in crosschecks.check_images(broken, require_digest=True))


# kustomizations with an `images:` list -> the render that shows its effect.
IMAGE_OVERRIDES = {"base/kustomization.yaml": "base", "overlays/prod/kustomization.yaml": "prod"}


@pytest.mark.parametrize("file", IMAGE_OVERRIDES)
def test_every_images_entry_takes_effect(file: str, docs) -> None:
    kustomization = yaml.safe_load((render.KUSTOMIZE / file).read_text())
    assert kustomization.get("images")
    assert crosschecks.check_image_overrides(kustomization, docs[IMAGE_OVERRIDES[file]]) == []


def test_an_images_entry_matching_no_image_is_caught(tmp_path: Path) -> None:
    # After base's `images:`, the image is ghcr.io/example/bookshop/recommendations: an overlay
    # entry for `recommendations` matches nothing, and kustomize says nothing.
    root = render.copy_tree(tmp_path)
    path = root / "overlays/prod/kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization["images"].append({"name": "recommendations", "newName": "registry.example/recommendations",
                                    "digest": "sha256:" + "1" * 64})
    path.write_text(yaml.safe_dump(kustomization))
    assert crosschecks.check_image_overrides(kustomization, render.parse(render.render("prod", root))) == [
        "images entry recommendations: no image of the render is registry.example/recommendations@sha256:" + "1" * 64
        + " (kustomize found no image by that name)"]


def test_a_disruption_budget_selecting_no_pod_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base+hpa-pdb", "components/hpa-pdb/recommendations.yaml",
                   "app.kubernetes.io/name: recommendations", "app.kubernetes.io/name: recommendation")
    assert any("PodDisruptionBudget/recommendations" in p for p in crosschecks.check_selectors(docs))


def test_an_object_outside_the_namespace_is_caught(tmp_path: Path) -> None:
    # Without the overlay's NamespaceTransformer namespace, the components' objects have none.
    root = render.break_copy(tmp_path, "overlays/prod/kustomization.yaml", "\n      namespace: bookshop\n", "\n")
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
    assert any(p.startswith("Deployment/marketplace: marketplace does not accept RECOMMENDATIONS_HOST (not in its --help")
               for p in problems), problems


# --- namespaces ------------------------------------------------------------------------------

def test_an_object_in_a_namespace_the_render_does_not_define_is_caught(tmp_path: Path) -> None:
    docs = _broken(tmp_path, "base", "base/kustomization.yaml", "  - namespace.yaml\n", "")
    assert any(p.startswith("Deployment/recommendations: namespace bookshop, not one the render defines")
               for p in crosschecks.check_namespaces(docs))


def test_an_object_in_a_misspelt_prerequisite_namespace_is_caught(tmp_path: Path) -> None:
    # The ingress gateway's Telemetry lives beside the gateway, in Istio's own istio-system.
    root = render.break_copy(tmp_path, "../istio/telemetry.yaml", "namespace: istio-system", "namespace: istio-sytem")
    _replace_once(root / "overlays/dev/mesh-sampling.yaml", "namespace: istio-system", "namespace: istio-sytem")
    docs = render.parse(render.render("dev", root))
    [problem] = crosschecks.check_namespaces(docs)
    assert problem.startswith("Telemetry/ingressgateway: namespace istio-sytem, not one the render defines ['bookshop', "
                              "'istio-system'"), problem


def test_a_render_may_define_several_namespaces(docs) -> None:
    # Another namespace with its own objects is fine; an object in a namespace nobody defines is not.
    observability = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "observability"}},
                     {"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": {"name": "jaeger", "namespace": "observability"}},
                     {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"}}]
    assert crosschecks.check_namespaces(docs["dev"] + observability) == []
    stray = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stray", "namespace": "observabilty"}}
    assert crosschecks.check_namespaces(docs["dev"] + observability + [stray]) == [
        "ConfigMap/stray: namespace observabilty, not one the render defines ['bookshop', 'istio-system', 'observability']"]


# --- OpenTelemetry SDK variables -------------------------------------------------------------

def test_variables_the_opentelemetry_sdk_reads_are_accepted(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "dev", "overlays/dev/kustomization.yaml", "      - OTEL_TRACES_SAMPLER=",
                   "      - OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=dev\n"
                   "      - OTEL_BSP_SCHEDULE_DELAY=1000\n"
                   "      - OTEL_TRACES_SAMPLER=")
    assert crosschecks.check_env(docs, accepted) == []


def test_a_misspelt_or_ineffective_sdk_variable_is_caught(tmp_path: Path, accepted) -> None:
    docs = _broken(tmp_path, "dev", "overlays/dev/kustomization.yaml", "      - OTEL_TRACES_SAMPLER=",
                   "      - OTEL_RESOURCE_ATTRIBUTE=deployment.environment.name=dev\n"
                   "      - OTEL_EXPORTER_OTLP_TIMEOUT=1000\n"
                   "      - OTEL_TRACES_SAMPLER=")
    problems = crosschecks.check_env(docs, accepted)
    assert any("does not accept OTEL_RESOURCE_ATTRIBUTE (" in p for p in problems), problems
    assert any("ignores OTEL_EXPORTER_OTLP_TIMEOUT: the binary sets the export timeout in code" in p
               for p in problems), problems


def test_the_sdk_allow_list_is_no_binary_setting_and_documents_each_entry(accepted) -> None:
    for name, meaning in {**crosschecks.OTEL_SDK_ENV, **crosschecks.OTEL_SDK_ENV_WITHOUT_EFFECT}.items():
        assert name.startswith("OTEL_") and meaning
        # A variable a binary parses itself belongs to its --help, not to this list.
        assert all(name not in settings for settings in accepted.values()), name
    assert not set(crosschecks.OTEL_SDK_ENV) & set(crosschecks.OTEL_SDK_ENV_WITHOUT_EFFECT)
