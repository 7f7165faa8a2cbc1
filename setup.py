"""Build fastmp._core from csrc/*.c (the Python-facing files) and csrc/core/*.c (the
Python-free core, also built alone by tests/c/Makefile).

Environment switches (msgspec-style), all off by default:
  FASTMP_STRICT=1    add -Werror
  FASTMP_DEBUG=1     -O0 -g3 -UNDEBUG
  FASTMP_SANITIZE=1  -fsanitize=address,undefined (run with LD_PRELOAD of libasan)
"""
import glob
import os
import platform
import sys

import setuptools
from setuptools import Extension, setup

# pyproject.toml's `license = "MIT"` (an SPDX expression) is read from setuptools 77 on; older
# ones reject the file with a schema dump.  `pip install .` and `python -m build` fetch a recent
# one themselves (pyproject's build-system.requires); a direct `python setup.py ...` uses
# whatever is installed, so say what to do.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"fastmp needs setuptools>=77 to build (found {setuptools.__version__}): "
             "pip install -U 'setuptools>=77', or build with pip install . / python -m build")


def _flag(name):
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                      "-D_GNU_SOURCE", "-fvisibility=hidden"]
extra_link_args = []
undef_macros = []

# csrc/core/glibc_compat.h binds the functions glibc 2.32-2.34 moved into libc.so.6 to their
# old symbol versions, which older glibc defines in libpthread.so.0 and librt.so.1: name those
# as needed libraries, even where (glibc >= 2.34) they are empty and -lpthread -lrt add nothing.
if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
    extra_link_args += ["-Wl,--push-state,--no-as-needed", "-l:libpthread.so.0", "-l:librt.so.1",
                        "-Wl,--pop-state"]

if _flag("FASTMP_STRICT"):
    extra_compile_args.append("-Werror")
if _flag("FASTMP_DEBUG") or _flag("FASTMP_SANITIZE"):
    extra_compile_args += ["-O0", "-g3"]
    undef_macros.append("NDEBUG")
else:
    extra_compile_args += ["-O2"]
if _flag("FASTMP_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    extra_compile_args += san
    extra_link_args += san

ext = Extension(
    "fastmp._core",
    sources=sorted(glob.glob("csrc/*.c") + glob.glob("csrc/core/*.c")),
    depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/core/*.h")),
    include_dirs=["csrc"],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
    undef_macros=undef_macros,
    libraries=["rt", "pthread"],
)

# A build with any switch must not reuse objects compiled without it.
switched = any(_flag(n) for n in ("FASTMP_STRICT", "FASTMP_DEBUG", "FASTMP_SANITIZE"))
setup(ext_modules=[ext], options={"build_ext": {"force": True}} if switched else {})
