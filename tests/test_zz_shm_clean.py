"""fastmp leaves nothing in /dev/shm: not after a normal exit, nor after a SIGKILL (a tracker
process cleans up).  Runs fresh interpreters (tests/_sync_shm_script.py), so that segments the
pytest process itself still maps do not get in the way.  Named test_zz_* to run last."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import load_impl, shm_entries, shm_gone_within, shm_mapped_by_live_processes

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(TESTS_DIR, "_sync_shm_script.py")


def launch(mode, out_path):
    fastmp = load_impl("fastmp")  # fail (not skip) here when fastmp does not import
    # the child must import the fastmp under test (installed, or an in-place build), not the
    # source tree, which has no compiled _core in a fresh clone
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    # output to a file, not a pipe: a tracker process may keep the write end open
    with open(out_path, "w") as out:
        return subprocess.Popen([sys.executable, SCRIPT, mode], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=TESTS_DIR)


def lines(out_path):
    with open(out_path) as f:
        return f.read().splitlines()


def reported(out_path):
    return {ln.split(None, 1)[1] for ln in lines(out_path) if ln.startswith("SHM ")}




@pytest.mark.timeout(120)
def test_no_shm_left_after_normal_exit(tmp_path):
    before = shm_entries()
    out = tmp_path / "out.txt"
    proc = launch("clean", out)
    try:
        rc = proc.wait(100)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(lines(out))
    assert rc == 0, text
    assert lines(out)[-1] == "DONE", text
    names = reported(out)
    assert names, "fastmp mapped no fastmp-* segment at all:\n" + text
    assert shm_gone_within(names, 2.0) == set()
    new = shm_entries() - before - shm_mapped_by_live_processes()
    assert new == set()


@pytest.mark.timeout(60)
def test_no_shm_left_after_sigkill(tmp_path):
    out = tmp_path / "out.txt"
    proc = launch("kill", out)
    try:
        deadline = time.monotonic() + 30
        while "READY" not in lines(out):
            assert proc.poll() is None, "\n".join(lines(out))
            assert time.monotonic() < deadline, "the script never got ready"
            time.sleep(0.05)
        names = reported(out)
        assert names, "fastmp mapped no fastmp-* segment at all"
        assert names <= shm_entries()  # they exist while the process lives
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = shm_gone_within(names, 5.0)
    assert left == set(), f"still in /dev/shm 5 s after SIGKILL: {sorted(left)}"
