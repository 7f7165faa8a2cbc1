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
    if os.path.exists(os.path.join(str(dist.locate_file("")), "setup.py")):
        return None     # a checkout's own egg-info (an in-place build), as stale as its last build
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


# A kernel older than 3.17 has no getrandom system call: the segment names fastmp draws must
# then come from /dev/urandom.  A seccomp filter makes the call fail with ENOSYS, as there.
_ENOSYS_PROGRAM = r"""
#include "glibc_compat.h"
#include "futex.h"
#include "status.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

int
main(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp");
        return 2;
    }
    char raw[4];
    long n = syscall(SYS_getrandom, raw, sizeof raw, 0);
    printf("getrandom %ld %d\n", n, n < 0 ? errno : 0);
    char a[33] = "", b[33] = "";
    int st_a = fm_random_hex(a, 16), st_b = fm_random_hex(b, 16);
    printf("random_hex %d %d %zu %d\n", st_a, st_b, strlen(a), strcmp(a, b) != 0);
    return 0;
}
"""


def test_random_names_without_the_getrandom_system_call(tmp_path):
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" \
            or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the fallback is glibc_compat.h's, for glibc on x86_64 and aarch64")
    core = os.path.join(ROOT, "csrc", "core")
    gcc = shutil.which("gcc")
    if gcc is None or not os.path.isdir(core):
        pytest.skip("needs gcc and the C sources")
    src = tmp_path / "enosys.c"
    src.write_text(_ENOSYS_PROGRAM)
    exe = tmp_path / "enosys"
    sources = sorted(os.path.join(core, f) for f in os.listdir(core) if f.endswith(".c"))
    subprocess.run([gcc, "-std=c11", "-D_GNU_SOURCE", "-O1", "-I", core, str(src), *sources,
                    "-o", str(exe), "-pthread", "-lrt"], check=True, timeout=300)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    import errno
    assert (out.returncode, out.stdout) == (
        0, f"getrandom -1 {errno.ENOSYS}\nrandom_hex 0 0 32 1\n")
