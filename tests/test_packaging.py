"""Packaging: the version has one source, and the built extension loads on old glibc.

The sdist and wheel themselves (what they hold, that the sdist builds alone, the manylinux tag
auditwheel gives) are checked by .ci/run, which builds them.
"""
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import fastmp
import fastmp._core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(ROOT, "pyproject.toml")

# The oldest glibc csrc/core/glibc_compat.h reaches (manylinux2014), and the libraries that
# define the functions it binds to old versions there.
GLIBC_MAX = (2, 17)
NEEDED_FOR_OLD_GLIBC = {"libpthread.so.0", "librt.so.1"}


def _installed_distribution():
    """fastmp's installed distribution, when the fastmp imported here is the one it installed."""
    try:
        dist = importlib.metadata.distribution("fastmp")
    except importlib.metadata.PackageNotFoundError:
        return None
    init = os.path.realpath(fastmp.__file__)
    for f in dist.files or ():
        if str(f).replace(os.sep, "/") == "fastmp/__init__.py":
            if os.path.realpath(dist.locate_file(f)) == init:
                return dist
    return None


def test_version_is_the_installed_distributions():
    dist = _installed_distribution()
    if dist is None:
        pytest.skip("fastmp is imported from a source tree, not from an installed distribution")
    assert isinstance(fastmp.__version__, str)
    assert fastmp.__version__ == importlib.metadata.version("fastmp") == dist.version
    assert dist.metadata["License-Expression"] == "MIT"


def test_version_has_one_source():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is 3.11+")
    if not os.path.exists(PYPROJECT):
        pytest.skip("no pyproject.toml next to the tests")
    import tomllib

    with open(PYPROJECT, "rb") as f:
        conf = tomllib.load(f)
    project = conf["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert conf["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastmp.__version__"}
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert os.path.exists(os.path.join(ROOT, "LICENSE"))
    # The literal setuptools reads without importing fastmp (which needs the built _core).
    with open(os.path.join(ROOT, "fastmp", "__init__.py"), encoding="utf-8") as f:
        literal = re.findall(r'^__version__ = "([^"]+)"$', f.read(), re.M)
    assert literal == [fastmp.__version__]


def _elf_dump(flag):
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("symbol versions are glibc's")
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("glibc_compat.h covers x86_64 and aarch64")
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump")
    return subprocess.run([objdump, flag, fastmp._core.__file__], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_core_needs_no_glibc_newer_than_manylinux2014():
    versions = {tuple(int(x) for x in v.split("."))
                for v in re.findall(r"\bGLIBC_([0-9]+(?:\.[0-9]+)+)\b", _elf_dump("-T"))}
    assert versions, "no GLIBC_ symbol versions found"
    newer = sorted(v for v in versions if v[:2] > GLIBC_MAX)
    assert newer == []


def test_core_loads_the_libraries_old_glibc_keeps_pthread_and_shm_in():
    needed = set(re.findall(r"^\s*NEEDED\s+(\S+)$", _elf_dump("-p"), re.M))
    assert NEEDED_FOR_OLD_GLIBC <= needed
