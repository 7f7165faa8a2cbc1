"""A text lint over csrc/: cheap checks of the C conventions (docs/design.md).

- The Python-free core (every file in csrc/core/) never includes Python.h.
- Between Py_BEGIN_ALLOW_THREADS and Py_END_ALLOW_THREADS nothing touches a
  Python object: no Py*/_Py* call, and the two are always matched.
- Every blocking futex wait sits in a loop that handles FM_EINTR.
- The CPython glue the Python-facing files share (type registration, timeouts, saving a
  pending exception, the _fm_attach check) is written once, in glue.c or compat.h.
"""
import pathlib
import re

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
CORE = CSRC / "core"


def _c_files(folder, pattern="*.[ch]"):
    return sorted(folder.glob(pattern))


def _all_c_files():
    return _c_files(CSRC) + _c_files(CORE)


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def test_csrc_layout():
    # the core is there, and every .c file of either folder is built (setup.py globs both)
    assert {"futex.c", "prims.c", "shm.c", "ring.c", "doorbell.c"} <= {
        p.name for p in _c_files(CORE, "*.c")}
    assert {"glue.c", "module.c", "pool.c", "queue.c", "sync.c", "value.c"} <= {
        p.name for p in _c_files(CSRC, "*.c")}


def test_python_free_core_does_not_include_python():
    for path in _c_files(CORE):
        text = path.read_text()
        assert not re.search(r'#\s*include\s*[<"](Python|fastmp|compat|structmember)\.h', text), \
            path.name
        # and it reaches nothing outside its folder
        assert not re.search(r'#\s*include\s*"\.\./', text), path.name


def test_every_file_binds_the_old_glibc_symbols():
    # csrc/core/glibc_compat.h's .symver lines act only in the files that include it: a file
    # that calls shm_open or pthread_create without it makes the wheel need glibc 2.34
    for path in _c_files(CORE, "*.c"):
        assert '#include "glibc_compat.h"' in path.read_text(), path.name
    assert '#include "core/glibc_compat.h"' in (CSRC / "fastmp.h").read_text()
    for path in _c_files(CSRC, "*.c"):
        assert '#include "fastmp.h"' in path.read_text() or \
            '#include "pool.h"' in path.read_text(), path.name


def test_memory_orders_are_defined_once():
    for path in _all_c_files():
        if path.name == "atomics.h":
            continue
        text = _strip_comments(path.read_text())
        assert not re.search(r"#\s*define\s+\w+\s+memory_order_", text), path.name


def test_no_python_api_without_the_gil():
    for path in _all_c_files():
        text = _strip_comments(path.read_text())
        begins = [m.start() for m in re.finditer(r"\bPy_BEGIN_ALLOW_THREADS\b", text)]
        ends = [m.start() for m in re.finditer(r"\bPy_END_ALLOW_THREADS\b", text)]
        assert len(begins) == len(ends), path.name
        for b, e in zip(begins, ends):
            assert b < e, path.name
            body = text[b + len("Py_BEGIN_ALLOW_THREADS"):e]
            calls = re.findall(r"\b_?Py[A-Za-z_]*\s*\(", body)
            assert calls == [], (path.name, calls)


# Functions that run in threads that never run Python code (the pool's collector thread:
# signals are handled by the interpreter's main thread): they block without FM_BLOCKING().
NO_PYTHON_THREAD = {"pool_collect.c": ("collector_take",)}


def _without_functions(text, names):
    for name in names:
        m = re.search(r"^\w[^\n]*\n" + name + r"\([^)]*\)\n\{\n.*?^\}\n", text, flags=re.S | re.M)
        if m is None:
            m = re.search(r"^" + name + r"\([^)]*\)\n\{\n.*?^\}\n", text, flags=re.S | re.M)
        assert m is not None, name
        text = text[:m.start()] + text[m.end():]
    return text


def test_blocking_calls_go_through_the_eintr_loop():
    # Outside the Python-free files, the GIL-free blocking primitives are
    # only called inside FM_BLOCKING(), which retries FM_EINTR after
    # PyErr_CheckSignals().
    # A helper named *_wait_once may wrap one such wait (queue.c does): then the helper
    # counts as blocking, and it is its calls that must sit in FM_BLOCKING().
    blocking = r"\bfm_(mutex_lock|sem_wait|event_wait|cond_take_token|seq_wait|futex_wait)\s*\("
    helper_def = re.compile(r"^([a-z_]+_wait_once)\s*\(")
    helper_call = r"\b[a-z_]+_wait_once\s*\("
    for path in _c_files(CSRC, "*.c"):
        text = _without_functions(_strip_comments(path.read_text()),
                                  NO_PYTHON_THREAD.get(path.name, ()))
        in_helper = False
        for line in text.splitlines():
            if helper_def.match(line):
                in_helper = True
                continue
            if line.startswith("}"):
                in_helper = False
            if re.search(blocking, line) and not in_helper:
                assert "FM_BLOCKING(" in line, (path.name, line.strip())
            if re.search(helper_call, line) and not helper_def.match(line):
                assert "FM_BLOCKING(" in line, (path.name, line.strip())


# Each call or text that only the shared glue may spell out, and the file that holds it.
GLUE_ONLY = {
    r"\bPyType_FromModuleAndSpec\s*\(": "glue.c",     # fm_add_type
    r"\bPyModule_AddObject\s*\(": "glue.c",           # fm_add_type
    r"\bfm_deadline_after\s*\(": "glue.c",            # fm_timeout_to_deadline
    r"_fm_attach\(\) needs the tuple": "glue.c",      # fm_check_state
    r"\bPyErr_(Fetch|Restore|GetRaisedException|SetRaisedException)\s*\(": "compat.h",
}
# Files that keep their own copies until they move onto the glue (none left); every name
# here must be a file of csrc/.
NOT_YET_ON_GLUE = set()


def test_glue_is_written_once():
    names = {p.name for p in _c_files(CSRC)}
    assert NOT_YET_ON_GLUE <= names, NOT_YET_ON_GLUE - names
    for path in _c_files(CSRC):         # the Python-facing files (the core has no Python)
        if path.name in NOT_YET_ON_GLUE:
            continue
        text = _strip_comments(path.read_text())
        for pattern, home in GLUE_ONLY.items():
            if path.name != home:
                assert not re.search(pattern, text), (path.name, pattern, home)
