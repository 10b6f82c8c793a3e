"""Where glia finds its compiled parts (glia.native): env, installed package, checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from glia import native
from glia.datapath.loader import default_obj_dir

CHECKOUT = Path(__file__).resolve().parents[2] / "build"


def test_in_a_checkout_the_objects_are_make_bpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.BPF_DIR_ENV, raising=False)
    assert not native.PACKAGE_BPF_DIR.exists()  # an editable install compiles nothing in
    assert native.bpf_obj_dir() == default_obj_dir() == CHECKOUT / "bpf"
    assert native.cni_fastpath() == CHECKOUT / "bin" / "glia-cni"


def test_glia_bpf_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(native.BPF_DIR_ENV, str(tmp_path))
    assert native.bpf_obj_dir() == default_obj_dir() == tmp_path


def test_the_package_wins_over_the_checkout_once_it_holds_objects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(native.BPF_DIR_ENV, raising=False)
    package = tmp_path / "_bpf"
    package.mkdir()
    monkeypatch.setattr(native, "PACKAGE_BPF_DIR", package)
    assert native.bpf_obj_dir() == CHECKOUT / "bpf"  # an empty dir is no installation
    (package / "sock.bpf.o").write_bytes(b"\x7fELF")
    assert native.bpf_obj_dir() == package
    fast = tmp_path / "_bin" / "glia-cni"
    monkeypatch.setattr(native, "PACKAGE_FASTPATH", fast)
    assert native.cni_fastpath() == CHECKOUT / "bin" / "glia-cni"
    fast.parent.mkdir()
    fast.write_bytes(b"\x7fELF")
    assert native.cni_fastpath() == fast
