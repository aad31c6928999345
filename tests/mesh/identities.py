"""A test CA standing in for istiod's: a root, and per workload a certificate whose URI SAN is
the SPIFFE identity Istio derives from its service account, handed to that workload's Envoy
through file-based SDS under the secret names Istio's config asks for (`default`, `ROOTCA`)."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# Istio's names (pilot/pkg/model: SDSDefaultResourceName, SDSRootResourceName).
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
# Certificates outlive any run by far; Envoy checks validity, so they start a little in the past
# (clock skew between nothing, but a run that starts at midnight should not care).
VALIDITY = datetime.timedelta(days=2)
BACKDATE = datetime.timedelta(hours=1)


def spiffe_id(namespace: str, service_account: str) -> str:
    """The identity Istio gives a pod running as `service_account` in `namespace`."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class TestCA:
    """A root CA (ECDSA P-256, as fast as Envoy likes it) that signs workload certificates."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                          x509.NameAttribute(NameOID.COMMON_NAME, "bookshop loopback mesh test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._name = name
        self.cert = (x509.CertificateBuilder()
                     .subject_name(name).issuer_name(name)
                     .public_key(self._key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self._key, hashes.SHA256()))
        self.root_pem = _pem(self.cert)

    def workload(self, identity: str) -> tuple[str, str]:
        """(certificate PEM, private key PEM) for a workload whose only SAN is `identity`, usable
        as client and server, as istiod's are."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self._name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                               critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self._key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return _pem(cert), key_pem

    def write_sds(self, directory: Path, identity: str) -> Path:
        """`directory/default.yaml` (the workload's certificate and key) and
        `directory/ROOTCA.yaml` (the root it trusts), as Envoy's file-based SDS reads them."""
        directory.mkdir(parents=True, exist_ok=True)
        chain, key = self.workload(identity)
        secrets = {
            WORKLOAD_SECRET: {"tls_certificate": {"certificate_chain": {"inline_string": chain},
                                                  "private_key": {"inline_string": key}}},
            ROOT_SECRET: {"validation_context": {"trusted_ca": {"inline_string": self.root_pem}}},
        }
        for name, secret in secrets.items():
            resource = {"@type": SECRET_TYPE, "name": name, **secret}
            (directory / f"{name}.yaml").write_text(yaml.safe_dump({"resources": [resource]}))
        return directory
