"""The control plane's keys, made fresh for each one: a CA, the API server's serving
certificate, one client certificate (the admin, in `system:masters`, that the controllers,
kwok and kubectl use) and the key pair that signs service-account tokens."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A control plane lives minutes; a day is plenty, backdated against clock skew.
VALIDITY = datetime.timedelta(days=1)
BACKDATE = datetime.timedelta(hours=1)


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate for `host` and its key (PEM): what a platform's CA would put in a TLS Secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(_name(host))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def issued_for(host: str) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA, and a certificate for `host` it signed with that certificate's key (PEM):
    what a platform's issuer (cert-manager, a company CA) puts in a TLS Secret, and the root its
    clients trust."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"test CA for {host}")
    window = dict(serial_number=x509.random_serial_number(), not_valid_before=now - BACKDATE,
                  not_valid_after=now + VALIDITY)
    ca = (x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(), **window)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    window["serial_number"] = x509.random_serial_number()
    cert = (x509.CertificateBuilder(subject_name=_name(host), issuer_name=ca_name, public_key=key.public_key(), **window)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class Keys:
    """The files the control plane's flags name, written into `folder`."""

    def __init__(self, folder: Path, api_ip: str, service_ip: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        self._window = (now - BACKDATE, now + VALIDITY)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = _name("bookshop local control plane CA")
        ca = self._builder(self._ca_name, self._ca_key.public_key()) \
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True) \
            .sign(self._ca_key, hashes.SHA256())
        _write_cert(ca, self.ca)
        # The names a client may dial: the address in the namespace and the in-cluster ones.
        sans = [x509.DNSName(name) for name in
                ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in (api_ip, service_ip, "127.0.0.1")]
        self._leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, sans, "apiserver")
        self._leaf("admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, [], "admin")
        signer = ec.generate_private_key(ec.SECP256R1())
        _write_key(signer, self.service_account_key)
        self.service_account_public.write_bytes(signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def service_account_key(self) -> Path:
        return self.folder / "service-account.key"

    @property
    def service_account_public(self) -> Path:
        """What the API server verifies tokens with (it reads no public key from a private one)."""
        return self.folder / "service-account.pub"

    def cert(self, who: str) -> Path:
        return self.folder / f"{who}.crt"

    def key(self, who: str) -> Path:
        return self.folder / f"{who}.key"

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._ca_name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(self._window[0]).not_valid_after(self._window[1]))

    def _leaf(self, common: str, organization: str | None, usage, sans: list, file: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(_name(common, organization), key.public_key()) \
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True) \
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write_cert(builder.sign(self._ca_key, hashes.SHA256()), self.cert(file))
        _write_key(key, self.key(file))
