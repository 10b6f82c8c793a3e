"""Where glia's compiled parts are at run time: the BPF objects and glia-cni's fast path.

An installed wheel carries them in the package (``glia/_bpf/*.bpf.o``,
``glia/_bin/glia-cni``, compiled by setup.py through native/glia_build.py); a
checkout has them in ``build/`` once ``make bpf`` ran. Called by the datapath
loader and the agent (:func:`bpf_obj_dir`; the agent's ``bpf_obj_dir`` setting
wins over it), the lab and ``glia cni install`` (:func:`cni_fastpath`).
"""

from __future__ import annotations

import os
from pathlib import Path

BPF_DIR_ENV = "GLIA_BPF_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_BPF_DIR = PACKAGE_DIR / "_bpf"
PACKAGE_FASTPATH = PACKAGE_DIR / "_bin" / "glia-cni"
# src/glia/native.py -> the checkout; meaningless (and absent) in an installation.
CHECKOUT_BUILD_DIR = PACKAGE_DIR.parents[1] / "build"


def bpf_obj_dir() -> Path:
    """$GLIA_BPF_DIR, else the installed package's objects, else build/bpf of the checkout."""
    env = os.environ.get(BPF_DIR_ENV)
    if env:
        return Path(env)
    if any(PACKAGE_BPF_DIR.glob("*.bpf.o")):
        return PACKAGE_BPF_DIR
    return CHECKOUT_BUILD_DIR / "bpf"


def cni_fastpath() -> Path:
    """glia-cni's compiled fast path: the installed package's, else build/bin of the checkout."""
    if PACKAGE_FASTPATH.is_file():
        return PACKAGE_FASTPATH
    return CHECKOUT_BUILD_DIR / "bin" / "glia-cni"
