"""setuptools hooks that put glia's compiled parts into the wheel (the rest is pyproject.toml).

``build_py`` also compiles the BPF objects and glia-cni's fast path with
native/glia_build.py (the flags of ``make bpf``) into the package, as
``glia/_bpf/*.bpf.o`` and ``glia/_bin/glia-cni`` (found at run time by
:mod:`glia.native`). An editable install (``pip install -e``, scripts/setup.sh)
skips that: a checkout uses build/ of ``make bpf``.

The wheel is therefore platform-specific but not tied to a Python version or
ABI: tagged ``py3-none-<platform>`` (``linux_x86_64`` here) instead of
``py3-none-any``. The fast path is an ELF executable for the build machine
(dynamically linked against its glibc), and the BPF objects are built for its
byte order and kernel headers.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _glia_build() -> ModuleType:
    # native/ is not a package; load the helper by path (the build runs from the source tree).
    spec = importlib.util.spec_from_file_location("glia_build", ROOT / "native" / "glia_build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithNative(build_py):
    """The Python files, then the compiled parts into the package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        helper = _glia_build()
        package = Path(self.build_lib) / "glia"
        # build_lib outlives a build: an object whose source is gone must not ship.
        for stale in ("_bpf", "_bin"):
            shutil.rmtree(package / stale, ignore_errors=True)
        build_temp = Path(self.get_finalized_command("build").build_temp)
        try:
            helper.build_bpf(package / "_bpf", ROOT)
            # No compiled-in fallback: `glia cni install` puts glia-cni-python next to it.
            helper.build_fastpath(package / "_bin" / "glia-cni", build_temp / "native", "", ROOT)
        except helper.BuildError as e:
            raise SystemExit(f"glia: {e}") from None


class PlatformDistribution(Distribution):
    """Installed into platlib (the wheel's root), as a distribution with compiled parts is."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """``py3-none-<platform>``: compiled parts inside, but no Python extension module."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    distclass=PlatformDistribution,
    cmdclass={"build_py": BuildPyWithNative, "bdist_wheel": PlatformWheel},
)
