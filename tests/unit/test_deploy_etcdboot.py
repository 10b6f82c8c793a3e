"""``glia etcd bootstrap`` without an etcd: the CA and client certificates, idempotent."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from glia.cli.main import app
from glia.deploy import etcdboot

USERS = [
    "root",
    "glia",
    "glia-remote",
    "glia-operator",
    "glia-config",
    "glia-agent-n1",
    "glia-agent-n2",
]


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_offline_bootstrap_writes_a_cert_per_user_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    args = [
        "etcd",
        "bootstrap",
        "--cluster",
        "c1",
        "--nodes",
        "n1,n2",
        "--out",
        str(out),
        "-o",
        "json",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert set(data["files"]) == {"ca", *USERS}
    assert data["etcd"] == {"endpoints": [], "steps": []}
    for user in USERS:
        assert _cn(out / f"{user}.crt") == user
        assert stat.S_IMODE((out / f"{user}.key").stat().st_mode) == 0o600
    first = _snapshot(out)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert _snapshot(out) == first


def test_an_existing_ca_signs(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    paths = etcdboot.issue_certs(tmp_path / "other", etcdboot.users_of("c1", ["n1"]))
    out.mkdir()
    (out / "ca.crt").write_bytes(paths["ca"].cert.read_bytes())
    (out / "ca.key").write_bytes(paths["ca"].key.read_bytes())
    etcdboot.issue_certs(out, etcdboot.users_of("c1", ["n1"]))
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    agent = x509.load_pem_x509_certificate((out / "glia-agent-n1.crt").read_bytes())
    agent.verify_directly_issued_by(ca)
    assert (out / "ca.crt").read_bytes() == paths["ca"].cert.read_bytes()


def test_bad_input_is_named() -> None:
    runner = CliRunner()
    cases = [
        (["--cluster", "C1", "--nodes", "n1"], "cluster name 'C1'"),
        (["--cluster", "c1", "--nodes", ","], "at least one node"),
        (["--cluster", "c1", "--nodes", "n1,n1"], "n1 given more than once"),
        (["--cluster", "c1", "--nodes", "n_1"], "'n_1'"),
    ]
    for extra, message in cases:
        r = runner.invoke(app, ["etcd", "bootstrap", *extra, "--out", "/tmp/glia-never"])
        assert r.exit_code == 1, (extra, r.output)
        assert message in r.output, (extra, r.output)
        assert "Traceback" not in r.output
    assert not Path("/tmp/glia-never").exists()


def test_missing_root_credentials_are_named(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "etcd",
            "bootstrap",
            "--cluster",
            "c1",
            "--nodes",
            "n1",
            "--out",
            str(tmp_path),
            "--endpoint",
            "https://127.0.0.1:1",
            "--cert",
            str(tmp_path / "nope.crt"),
        ],
    )
    assert r.exit_code == 1
    assert f"root certificate {tmp_path / 'nope.crt'}: no such file" in r.output


def test_auth_commands_create_root_first_and_enable_auth_last() -> None:
    cmds = etcdboot.auth_commands(etcdboot.users_of("c1", ["n1"]))
    assert cmds[0] == ["role", "add", "root"]
    assert cmds[-1] == ["auth", "enable"]
    assert ["user", "add", "glia-agent-n1", "--no-password"] in cmds
