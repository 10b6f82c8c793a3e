"""A small PKI for etcd: one CA, server certificates, client certificates.

Called by :mod:`glia.lab.etcd` (server and per-user client certificates for each
lab or test etcd) and by the lab for the certificates it hands to agents and
operators. etcd maps a client certificate's CN to its etcd user, so a client
certificate's ``cn`` is the user name.

ECDSA P-256 keys; private keys are written 0600, atomically (temp file and
rename), so a reader never sees half a key. Both :func:`make_ca` and
:func:`issue` reuse what is already on disk when it still fits, so repeated
lab runs keep their certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
# A certificate closer than this to its end is issued again rather than reused.
RENEW_BEFORE = dt.timedelta(days=30)
# Tolerates a clock that is slightly behind on another host or namespace.
BACKDATE = dt.timedelta(hours=1)


class CertPaths(NamedTuple):
    cert: Path
    key: Path


def make_ca(dir: Path, name: str = "glia-ca") -> CertPaths:
    """Create (or reuse) a self-signed CA as ``dir/NAME.crt`` and ``dir/NAME.key``."""
    paths = CertPaths(dir / f"{name}.crt", dir / f"{name}.key")
    if paths.cert.exists() and paths.key.exists():
        cert = _load_cert(paths.cert)
        if _fresh(cert):
            return paths
    dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(paths.key, key)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def issue(
    ca: CertPaths,
    dir: Path,
    name: str,
    *,
    cn: str,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    server: bool = False,
    client: bool = True,
) -> CertPaths:
    """Issue (or reuse) ``dir/NAME.crt`` + ``dir/NAME.key`` signed by ``ca``.

    ``server`` adds the serverAuth usage (SANs are checked by clients),
    ``client`` the clientAuth usage (etcd reads the user from ``cn``). An etcd
    member's peer certificate needs both.
    """
    if not cn:
        raise ValueError("certificate CN must not be empty")
    if not (server or client):
        raise ValueError(f"certificate {name!r}: needs server or client usage (or both)")
    if server and not (ips or dns):
        raise ValueError(f"server certificate {name!r} needs at least one IP or DNS SAN")
    try:
        ip_objs = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as e:
        raise ValueError(f"certificate {name!r}: {e}") from None
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ip) for ip in ip_objs]

    ca_cert = _load_cert(ca.cert)
    paths = CertPaths(dir / f"{name}.crt", dir / f"{name}.key")
    if paths.cert.exists() and paths.key.exists():
        old = _load_cert(paths.cert)
        if _fresh(old) and _matches(old, ca_cert, cn, san, usages):
            return paths

    ca_key = _load_key(ca.key)
    dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(paths.key, key)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _matches(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    cn: str,
    san: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> bool:
    """Whether an existing certificate is what :func:`issue` would make now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [a.value for a in cns] != [cn]:
        return False
    try:
        have_san = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        have_san = []
    try:
        have_eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        have_eku = []
    return set(have_san) == set(san) and set(have_eku) == set(usages)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load certificate {path}: {e}") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot load private key {path}: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"private key {path} is not an ECDSA key")
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600, so a key is never readable by others, not
    # even for a moment; chmod then sets the final mode.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
