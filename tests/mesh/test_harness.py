"""The harness itself: what it feeds Istio leaves the policies under test as rendered, each flip
changes exactly one of them, the test CA's certificates carry the identities Istio expects,
and the bootstrap changes the loopback needs are the ones documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509

from envoys import runnable
from identities import ROOT_SECRET, SECRET_TYPE, WORKLOAD_SECRET, TestCA, spiffe_id
from inputs import BASE, FLIPS, NAMESPACE, PROBES, Doc, Plan, install_manifest, loopback_inputs, parse, \
    render_overlay, services_of

# The objects whose behaviour the mesh cases prove: the harness must hand them to Istio untouched.
POLICY_KINDS = ("PeerAuthentication", "AuthorizationPolicy", "VirtualService", "DestinationRule", "Gateway",
                "Telemetry", "EnvoyFilter")


def _policies(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    return {(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]): doc
            for doc in docs if doc["kind"] in POLICY_KINDS}


@pytest.fixture(scope="module")
def sources() -> tuple[list[Doc], list[Doc]]:
    rendered = render_overlay()
    install = install_manifest()
    return rendered, install


@pytest.fixture(scope="module")
def inputs(sources: tuple[list[Doc], list[Doc]]) -> list[Doc]:
    rendered, install = sources
    plan = Plan.pick(services_of(rendered, install))
    return loopback_inputs(rendered, install, parse(PROBES.read_text()), plan, app_ports=(40001, 40002))


def test_the_policies_under_test_reach_istio_as_rendered(sources, inputs) -> None:
    rendered, _ = sources
    assert len(_policies(rendered)) >= 8  # what istio/ and the overlay hold, not an empty match
    assert _policies(inputs) == _policies(rendered)


@pytest.mark.parametrize("flip", [flip for flip in FLIPS.values() if flip != BASE], ids=lambda flip: flip.name)
def test_a_flip_changes_exactly_one_policy(inputs, flip) -> None:
    before, after = _policies(inputs), _policies(flip.apply(inputs))
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert len(changed) == 1, (flip.name, changed)
    # and nothing else: the copy differs from the original in that object alone
    others = [doc for doc in flip.apply(inputs) if doc["kind"] not in POLICY_KINDS]
    assert others == [doc for doc in inputs if doc["kind"] not in POLICY_KINDS]


def test_a_flip_of_a_missing_policy_fails_instead_of_doing_nothing(inputs) -> None:
    without = [doc for doc in inputs if doc["kind"] != "AuthorizationPolicy"]
    for name in ("no marketplace allow", "marketplace: any caller", "recommendations: any path"):
        with pytest.raises(LookupError):
            FLIPS[name].apply(without)


def test_each_envoy_gets_a_certificate_of_its_service_account_signed_by_the_root(tmp_path: Path) -> None:
    ca = TestCA()
    identity = spiffe_id(NAMESPACE, "marketplace")
    assert identity == "spiffe://cluster.local/ns/bookshop/sa/marketplace"
    directory = ca.write_sds(tmp_path / "marketplace", identity)
    secrets = {}
    for name in (WORKLOAD_SECRET, ROOT_SECRET):
        (resource,) = yaml.safe_load((directory / f"{name}.yaml").read_text())["resources"]
        assert resource["@type"] == SECRET_TYPE and resource["name"] == name
        secrets[name] = resource
    chain = secrets[WORKLOAD_SECRET]["tls_certificate"]["certificate_chain"]["inline_string"]
    cert = x509.load_pem_x509_certificate(chain.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity]
    root = x509.load_pem_x509_certificate(
        secrets[ROOT_SECRET]["validation_context"]["trusted_ca"]["inline_string"].encode())
    cert.verify_directly_issued_by(root)
    with pytest.raises(Exception):  # noqa: B017 (whatever cryptography raises: not this root's)
        cert.verify_directly_issued_by(TestCA().cert)


def _bootstrap(address: str, sds_path: str) -> dict:
    secret = {"name": "default", "sds_config": {"path_config_source": {"path": sds_path}}}
    return {"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {
        "address": address, "port_value": 8080}}, "filter_chains": [{"transport_socket": {
            "typed_config": {"common_tls_context": {"tls_certificate_sds_secret_configs": [secret]}}}}]}]}}


def test_a_wildcard_listener_binds_the_pods_address_and_an_admin_port_is_added(tmp_path: Path) -> None:
    config, changes = runnable(_bootstrap("0.0.0.0", str(tmp_path / "default.yaml")), pod_ip="127.9.9.12",
                               sds_dir=tmp_path, admin_port=1234)
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "127.9.9.12"
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 1234}
    assert len(changes) == 2
    config, changes = runnable(_bootstrap("127.9.9.10", str(tmp_path / "default.yaml")), pod_ip="127.9.9.10",
                               sds_dir=tmp_path, admin_port=1234)
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "127.9.9.10"
    assert len(changes) == 1


def test_an_envoy_may_not_read_another_workloads_identity(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a file of"):
        runnable(_bootstrap("127.9.9.10", str(tmp_path / "other" / "default.yaml")), pod_ip="127.9.9.10",
                 sds_dir=tmp_path / "mine", admin_port=1234)
