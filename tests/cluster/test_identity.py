"""Identities from istiod's CA (dev): each proxied pod's key and certificate come from istiod's
certificate service on 15012, as its istio-agent would get them, authenticated with a token of
its ServiceAccount from the TokenRequest API; the certificate names the token's identity, not
the one asked for, and chains to the root every pod mounts; a token the API server would not
vouch for gets nothing."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import agent
import certs
from conftest import Overlay

pytestmark = pytest.mark.parametrize("overlay", ["dev"], indirect=True)


def uri_sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)


def chain_of(sds: Path) -> list[x509.Certificate]:
    """The workload certificate chain of an SDS directory (default.yaml), leaf first."""
    secret = yaml.safe_load((sds / "default.yaml").read_text())["resources"][0]
    return x509.load_pem_x509_certificates(
        secret["tls_certificate"]["certificate_chain"]["inline_string"].encode())


def chains_to(chain: list[x509.Certificate], root_pem: str) -> bool:
    """Each certificate signed by the next, the last by `root_pem`'s, within its validity."""
    root = x509.load_pem_x509_certificate(root_pem.encode())
    now = datetime.datetime.now(datetime.timezone.utc)
    issuers = chain[1:] + [root]
    try:
        for cert, issuer in zip(chain, issuers):
            cert.verify_directly_issued_by(issuer)
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def test_each_proxy_gets_its_pods_identity_chained_to_istiods_root(overlay: Overlay, provisioned: agent.Provisioned):
    names = {p.name.split("-")[0] for p in provisioned.proxies}
    assert {"marketplace", "recommendations", "istio"} <= names, names
    for proxy in provisioned.proxies:
        sds = provisioned.sds_dir / proxy.base
        chain = chain_of(sds)
        assert uri_sans(chain[0]) == [proxy.identity], f"{proxy.base}: {uri_sans(chain[0])}"
        root = agent.root_cert(overlay.cluster, proxy.namespace)
        assert chains_to(chain, root), f"{proxy.base}: its chain does not verify against istiod's root"
        # The root the bootstrap trusts (ROOTCA) is that same root.
        trusted = yaml.safe_load((sds / "ROOTCA.yaml").read_text())["resources"][0]
        assert trusted["validation_context"]["trusted_ca"]["inline_string"].strip() == root.strip()
        # The key is the certificate's.
        key = serialization.load_pem_private_key((sds / "key.pem").read_bytes(), None)
        assert key.public_key().public_numbers() == chain[0].public_key().public_numbers()


def test_a_chain_from_another_ca_does_not_verify_against_istiods_root(overlay: Overlay, provisioned: agent.Provisioned):
    """The twin of the chain check: a certificate no istiod signed fails it."""
    cert_pem, _ = certs.self_signed("marketplace.bookshop")
    root = agent.root_cert(overlay.cluster, "bookshop")
    assert not chains_to(x509.load_pem_x509_certificates(cert_pem), root)


def test_a_token_of_another_service_account_yields_that_identity(overlay: Overlay, tmp_path: Path):
    """The CSR asks for the marketplace (its namespace and service account name the subject),
    the token is the recommendations service account's: istiod's CA signs the token's identity."""
    bearer = agent.token(overlay.cluster, "bookshop", "recommendations")
    issued = agent.certify(overlay.cluster, tmp_path / "sds", namespace="bookshop",
                           service_account="marketplace", bearer=bearer)
    assert issued.returncode == 0, issued.stderr
    assert uri_sans(chain_of(tmp_path / "sds")[0]) == [agent.spiffe_id("bookshop", "recommendations")]


def resigned(bearer: str, signing_key: Path, *, back: int = 0) -> str:
    """`bearer` re-signed by the cluster's service-account key (the API server's own issuer key),
    its validity moved `back` seconds into the past: with `back` past its lifetime, a token the
    API server itself issued, expired."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, payload, _ = bearer.split(".")
    claims = json.loads(unb64(payload))
    for claim in ("iat", "nbf", "exp"):
        claims[claim] -= back
    signed = f"{header}.{b64(json.dumps(claims).encode()) if back else payload}"
    key = serialization.load_pem_private_key(signing_key.read_bytes(), None)
    r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signed}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def signing_key(overlay: Overlay) -> Path:
    return overlay.cluster.folder / "pki" / "service-account.key"


@pytest.mark.parametrize("case", ["wrong audience", "expired", "forged signature", "not a token"])
def test_istiods_ca_refuses_a_token_the_api_server_does_not_vouch_for(overlay: Overlay, tmp_path: Path, case: str):
    cluster = overlay.cluster
    good = agent.token(cluster, "bookshop", "marketplace")
    bearer = {
        "wrong audience": lambda: agent.token(cluster, "bookshop", "marketplace", audience="not-istio-ca"),
        # Two hours past its end.
        "expired": lambda: resigned(good, signing_key(overlay), back=2 * 3600 + int(agent.TOKEN_LIFETIME.total_seconds())),
        "forged signature": lambda: good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8),
        "not a token": lambda: "not-a-token",
    }[case]()
    issued = agent.certify(cluster, tmp_path / "sds", namespace="bookshop",
                           service_account="marketplace", bearer=bearer)
    assert issued.returncode != 0, f"{case}: istiod's CA issued a certificate"
    assert "Unauthenticated" in issued.stderr, issued.stderr
    assert not (tmp_path / "sds" / "default.yaml").exists()


def test_the_expired_twin_is_the_good_token_when_not_moved(overlay: Overlay, tmp_path: Path):
    """The control of the expiry case: the same re-signing with the validity kept is accepted,
    so the refusal above is the expiry, not the re-signing."""
    good = agent.token(overlay.cluster, "bookshop", "marketplace")
    issued = agent.certify(overlay.cluster, tmp_path / "sds", namespace="bookshop",
                           service_account="marketplace", bearer=resigned(good, signing_key(overlay)))
    assert issued.returncode == 0, issued.stderr
