"""glia.lab.pki: a CA, server and client certificates that etcd and gRPC accept."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from glia.lab.pki import CertPaths, issue, make_ca


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ca_is_a_ca_and_is_reused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    assert ca == CertPaths(tmp_path / "pki/glia-ca.crt", tmp_path / "pki/glia-ca.key")
    cert = load(ca.cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "glia-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(cert)
    assert mode(ca.key) == 0o600

    before = ca.cert.read_bytes(), ca.key.read_bytes()
    assert make_ca(tmp_path / "pki") == ca
    assert (ca.cert.read_bytes(), ca.key.read_bytes()) == before


def test_server_cert_has_sans_and_both_usages(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    ips = ["10.0.0.1", "127.0.0.1", "fd00::1"]
    dns = ["e1", "localhost"]
    srv = issue(ca, tmp_path, "server-e1", cn="e1", ips=ips, dns=dns, server=True, client=True)
    cert = load(srv.cert)
    cert.verify_directly_issued_by(load(ca.cert))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"e1", "localhost"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert mode(srv.key) == 0o600


def test_client_cert_cn_is_the_user_and_reissue_only_on_change(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    c = issue(ca, tmp_path, "user-glia", cn="glia")
    cert = load(c.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "glia"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    # Same request: the files on disk are kept.
    assert issue(ca, tmp_path, "user-glia", cn="glia") == c
    assert load(c.cert).serial_number == cert.serial_number
    # Another CN under the same file name: issued again.
    issue(ca, tmp_path, "user-glia", cn="glia-remote")
    again = load(c.cert)
    assert again.serial_number != cert.serial_number
    assert again.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "glia-remote"
    # A new CA: certificates of the old one are replaced.
    (tmp_path / "ca2").mkdir()
    ca2 = make_ca(tmp_path / "ca2")
    issue(ca2, tmp_path, "user-glia", cn="glia-remote")
    load(c.cert).verify_directly_issued_by(load(ca2.cert))


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    with pytest.raises(ValueError, match="not-an-ip"):
        issue(ca, tmp_path, "x", cn="x", ips=["not-an-ip"], server=True)
    with pytest.raises(ValueError, match="SAN"):
        issue(ca, tmp_path, "x", cn="x", server=True)
    with pytest.raises(ValueError, match="CN"):
        issue(ca, tmp_path, "x", cn="")
    with pytest.raises(ValueError, match="usage"):
        issue(ca, tmp_path, "x", cn="x", client=False)
    with pytest.raises(ValueError, match="cannot load"):
        issue(CertPaths(tmp_path / "missing.crt", tmp_path / "missing.key"), tmp_path, "x", cn="x")
