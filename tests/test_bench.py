"""`python -m fastmp.bench`: the command runs, and what it writes has the promised shape.

No assertion on speed: the ratios are only checked to be positive finite numbers.  The command
runs in a subprocess of the same interpreter, from a scratch directory (so the repo root is not
on its sys.path), with PYTHONPATH pointing at the fastmp this test process imported: the
installed package under a plain `pytest -q`, or the checkout with PYTHONPATH=$PWD.
"""
import ast
import inspect
import json
import math
import os
import platform
import subprocess
import sys

import pytest

import fastmp
import fastmp.bench as bench

FASTMP_DIR = os.path.dirname(os.path.realpath(fastmp.__file__))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
PARTS = (bench.C_PART, bench.NOT_C_PART)


def _env():
    env = dict(os.environ)
    root = os.path.dirname(FASTMP_DIR)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]]
                                                  if env.get("PYTHONPATH") else []))
    env.pop("PYTHONSAFEPATH", None)
    return env


def _run(args, cwd, timeout=150):
    return subprocess.run([sys.executable] + args, cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _positive_finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `python -m fastmp.bench --quick --json FILE` run (plus --plot when matplotlib is
    there): (completed process, the JSON, the plot's path or None)."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "bench.json"
    args = ["-m", "fastmp.bench", "--quick", "--json", str(out)]
    png = None
    if _has_matplotlib():
        png = tmp / "bench.png"
        args += ["--plot", str(png)]
    proc = _run(args, cwd=tmp)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    # exit 1 = something failed; only a peer (a third-party package) may, not fastmp or the stdlib
    failed = {(r["workload"], lib) for r in data["results"] for lib in r["errors"]}
    assert all(lib in bench.PEERS for _, lib in failed), f"{failed}\n{proc.stdout}"
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr
    return proc, data, png


@pytest.mark.timeout(240)
def test_quick_json_shape(quick):
    proc, data, _ = quick
    assert data["format"] == bench.JSON_FORMAT
    assert data["python"] == platform.python_version()
    assert isinstance(data["cores"], int) and data["cores"] >= 1
    assert isinstance(data["usable_cores"], int) and data["usable_cores"] >= 1
    assert data["start_method"] == "fork" and data["pin"] == "split"
    assert data["quick"] is True and data["rounds"] == 3
    assert isinstance(data["processes"], int) and data["processes"] >= 1
    assert isinstance(data["failed"], bool)
    assert _positive_finite(data["elapsed"])

    libs = {lib["name"]: lib for lib in data["libs"]}
    assert set(libs) == {"multiprocessing", "fastmp"} | set(bench.PEERS)
    for lib in libs.values():
        assert isinstance(lib["available"], bool)
        assert lib["available"] or lib["error"]
    assert libs["multiprocessing"]["available"] and libs["fastmp"]["available"]
    # the subprocess timed the very fastmp this test imports
    assert os.path.realpath(libs["fastmp"]["location"]) == FASTMP_DIR
    for name, (_, _, what) in bench.PEERS.items():
        assert libs[name]["kind"] == "peer" and libs[name]["for"] == what

    rows = data["results"]
    assert [r["workload"] for r in rows] == [w.name for w in bench.WORKLOADS]
    assert {r["group"] for r in rows} == set(bench.GROUPS)
    for row in rows:
        name = row["workload"]
        assert row["unit"] and isinstance(row["unit"], str), name
        assert row["fastmp_part"] in PARTS, name
        assert set(row["errors"]) <= set(row["peers"]), name     # see quick()
        for lib in ("multiprocessing", "fastmp"):
            rates = row["rates"][lib]
            assert len(rates) == data["rounds"], name
            assert all(_positive_finite(r) for r in rates), (name, rates)
            assert _positive_finite(row["median"][lib]), name
            assert row["n"][lib] >= 1, name
        assert "fastmp" in row["ratio"], name
        expected = {"fastmp"} | {p for p in row["peers"]
                                 if libs[p]["available"] and p not in row["errors"]}
        assert expected <= set(row["ratio"]) <= {"fastmp"} | set(row["peers"]), name
        for lib, ratio in row["ratio"].items():
            assert _positive_finite(ratio), (name, lib, ratio)
            lo, hi = row["spread"][lib]
            assert _positive_finite(lo) and _positive_finite(hi) and lo <= hi, (name, lib)
        if row["group"] == "sync":
            assert row["fastmp_part"] == bench.C_PART, name


def test_quick_table(quick):
    proc, data, png = quick
    out = proc.stdout
    assert "fastmp/stdlib" in out and "fastmp part" in out
    assert f"python {platform.python_version()}" in out
    assert f"{data['cores']} cores" in out
    for row in data["results"]:
        assert row["workload"] in out
    for lib in data["libs"]:
        if lib["kind"] == "peer" and not lib["available"]:
            assert "absent" in out
    # the progress line goes to a terminal only: stderr is a pipe here
    assert "\r" not in proc.stderr
    if png is not None:
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_from_json_reprints_the_table(quick, tmp_path):
    _, data, _ = quick
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(data))
    proc = _run(["-m", "fastmp.bench", "--from-json", str(saved)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fastmp/stdlib" in proc.stdout
    assert all(row["workload"] in proc.stdout for row in data["results"])


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastmp.bench import main\n"
            "sys.exit(main(['--only', 'lock', '--plot', 'out.png']))\n")
    proc = _run(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "matplotlib" in proc.stderr and "pip install" in proc.stderr
    assert proc.stdout == ""              # refused before running anything
    assert not (tmp_path / "out.png").exists()


def test_list_and_bad_pattern(tmp_path):
    proc = _run(["-m", "fastmp.bench", "--list"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[1] for line in proc.stdout.splitlines()] == [
        w.name for w in bench.WORKLOADS]
    proc = _run(["-m", "fastmp.bench", "--only", "no-such-workload"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "no workload matches" in proc.stderr


def test_select_by_group_and_pattern():
    names = lambda ws: [w.name for w in ws]  # noqa: E731
    assert names(bench.select(bench.WORKLOADS, "queue", groups=True)) == names(
        bench.QUEUE_WORKLOADS)
    assert names(bench.select(bench.WORKLOADS, "sync", groups=True)) == names(
        bench.SYNC_WORKLOADS)
    assert names(bench.select(bench.WORKLOADS, "pool-*,lock-with")) == [
        "lock-with", "pool-map", "pool-map-1mib", "pool-apply-async", "pool-start",
        "pool-apply", "pool-imap", "pool-maxtasks1"]


@pytest.mark.skipif(not os.path.isdir(BENCHMARKS), reason="no benchmarks/ beside tests/")
@pytest.mark.parametrize("group", bench.GROUPS)
def test_benchmark_scripts_list_their_group(group, tmp_path):
    script = os.path.join(BENCHMARKS, f"bench_{group}.py")
    proc = _run([script, "--list"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    expected = [w.name for w in bench.WORKLOADS if w.group == group]
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines] == expected
    # the lines of `python -m fastmp.bench --list` for that group: one command line
    whole = _run(["-m", "fastmp.bench", "--list"], cwd=tmp_path, timeout=60)
    assert lines == [line for line in whole.stdout.splitlines() if line.split()[0] == group]


@pytest.mark.skipif(not os.path.isdir(BENCHMARKS), reason="no benchmarks/ beside tests/")
def test_bench_sync_script_runs(tmp_path):
    out = tmp_path / "sync.json"
    script = os.path.join(BENCHMARKS, "bench_sync.py")
    proc = _run([script, "--quick", "--only", "lock-with,barrier", "--json", str(out)],
                cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the table and the JSON of `python -m fastmp.bench`
    assert "fastmp/stdlib" in proc.stdout and "fastmp part" in proc.stdout
    data = json.loads(out.read_text())
    assert data["format"] == bench.JSON_FORMAT and data["quick"] is True
    assert data["command"] == ("python benchmarks/bench_sync.py --quick --only lock-with,barrier "
                               f"--json {out}")
    assert [r["workload"] for r in data["results"]] == ["lock-with", "barrier2"]
    assert all(r["group"] == "sync" and "fastmp" in r["ratio"] for r in data["results"])
    for r in data["results"]:
        assert set(r["rates"]) == {"multiprocessing", "fastmp"}
        assert all(_positive_finite(x) for rates in r["rates"].values() for x in rates)


def test_run_from_the_repo_root_times_the_fastmp_under_test(tmp_path):
    """`python -m fastmp.bench` from the checkout's root (as the README's quick start does):
    `-m` puts the root first on sys.path, so `fastmp` is the source tree; without a compiled
    _core there, the command falls back to the installed fastmp and says so."""
    tree = os.path.join(REPO, "fastmp")
    if not os.path.isfile(os.path.join(tree, "bench", "__main__.py")):
        pytest.skip("not run from a checkout")
    in_tree_build = any(n.startswith("_core") and n.endswith(".so") for n in os.listdir(tree))
    if in_tree_build and os.path.realpath(tree) != FASTMP_DIR:
        pytest.skip("the checkout has an in-place build of its own, and the tests run against "
                    "another fastmp: python -m from the root would time the in-place one")
    out = tmp_path / "root.json"
    proc = _run(["-m", "fastmp.bench", "--quick", "--only", "lock-with", "--no-peers",
                 "--json", str(out)], cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    libs = {lib["name"]: lib for lib in json.loads(out.read_text())["libs"]}
    assert os.path.realpath(libs["fastmp"]["location"]) == FASTMP_DIR
    if os.path.realpath(tree) != FASTMP_DIR:
        assert "has no compiled _core: timing the installed fastmp" in proc.stderr


@pytest.mark.skipif(not os.path.isdir(BENCHMARKS), reason="no benchmarks/ beside tests/")
def test_benchmark_script_chooses_in_its_group_only(tmp_path):
    script = os.path.join(BENCHMARKS, "bench_sync.py")
    proc = _run([script, "--only", "queue"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "no workload matches 'queue'" in proc.stderr
    assert proc.stderr.startswith("usage: python benchmarks/bench_sync.py ")


def test_libs_times_only_the_named_libraries(tmp_path):
    out = tmp_path / "stdlib.json"
    proc = _run(["-m", "fastmp.bench", "--quick", "--only", "lock-with,queue-throughput",
                 "--libs", "multiprocessing", "--json", str(out)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert [lib["name"] for lib in data["libs"]] == ["multiprocessing"]
    for row in data["results"]:
        assert set(row["rates"]) == {"multiprocessing"}, row["workload"]
        assert len(row["rates"]["multiprocessing"]) == data["rounds"]
        assert row["ratio"] == {} and row["spread"] == {} and row["peers"] == []
        assert row["fastmp_part"] == bench.C_PART, row["workload"]
    assert "lock-with" in proc.stdout and "fastmp/stdlib" in proc.stdout


@pytest.mark.parametrize("libs, message", [
    ("multiprocessing,nolib", "unknown library 'nolib'"),
    ("fastmp,fastmp", "names a library twice"),
    (",", "names no library"),
])
def test_libs_refuses_bad_names(libs, message, tmp_path):
    proc = _run(["-m", "fastmp.bench", "--only", "lock", "--libs", libs], cwd=tmp_path,
                timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_libs_naming_an_absent_peer_is_an_error(tmp_path):
    """A peer that is not installed is reported absent by default, but when --libs names it,
    the run stops before timing anything (exit 2), saying how to install it."""
    absent = [name for name in bench.PEERS if bench.load_peer(name).module is None]
    if not absent:
        pytest.skip("every peer is installed here")
    proc = _run(["-m", "fastmp.bench", "--only", "queue-throughput,pool-map",
                 "--libs", "multiprocessing," + absent[0]], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: {absent[0]} is not usable here" in proc.stderr
    assert f"pip install {bench.PEERS[absent[0]][1]}" in proc.stderr
    assert proc.stdout == ""


def _stub_names(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.append(node.target.id)
    return names


def test_stub_matches_the_package():
    """fastmp/bench/__init__.pyi (shipped with the package) declares only names the package
    has, and every public function and class of it, every name of __all__."""
    stub = os.path.join(FASTMP_DIR, "bench", "__init__.pyi")
    names = set(_stub_names(stub))
    assert sorted(n for n in names if not hasattr(bench, n)) == []
    public = {n for n, v in vars(bench).items() if not n.startswith("_")
              and (inspect.isfunction(v) or inspect.isclass(v))}
    assert sorted(public - names) == []
    assert sorted(set(bench.__all__) - names) == []


# ---------------------------------------------------------------------------
# UltraDict, the peer of the Manager dict workloads

ULTRADICT_ROWS = ["manager-dict-set", "manager-dict-get", "manager-dict-2proc",
                  "manager-dict-1mib"]


def _importable(name):
    # find_spec, not an import: importing UltraDict changes the stdlib's resource tracker for
    # the whole process (see fastmp.bench.runner.tracker_kept), and this is the test process
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _ultradict_streams():
    # UltraDict names its stream segment after its control segment, plus "_memory"
    return {n for n in os.listdir("/dev/shm") if n.endswith("_memory")}


def test_ultradict_is_the_peer_of_the_manager_dict_rows():
    assert bench.PEERS["UltraDict"] == ("UltraDict", "UltraDict", "manager dicts")
    with_peer = [w.name for w in bench.WORKLOADS if "UltraDict" in w.peers]
    assert with_peer == ULTRADICT_ROWS


@pytest.mark.skipif(not _importable("UltraDict"), reason="UltraDict is not installed")
def test_ultradict_column_runs(tmp_path):
    """The quick run of the four dict rows gives UltraDict a positive rate and a ratio in each
    (the two-process row needs atomics for UltraDict's shared lock, and says so without it),
    and leaves no UltraDict segment in /dev/shm."""
    before = _ultradict_streams()
    out = tmp_path / "ud.json"
    proc = _run(["-m", "fastmp.bench", "--quick", "--only", ",".join(ULTRADICT_ROWS),
                 "--json", str(out)], cwd=tmp_path, timeout=120)
    data = json.loads(out.read_text())
    libs = {lib["name"]: lib for lib in data["libs"]}
    assert list(libs) == ["multiprocessing", "fastmp", "UltraDict"]
    assert libs["UltraDict"]["available"] and libs["UltraDict"]["version"]
    assert libs["UltraDict"]["for"] == "manager dicts"
    rows = {r["workload"]: r for r in data["results"]}
    assert list(rows) == ULTRADICT_ROWS
    has_atomics = _importable("atomics")
    for name, row in rows.items():
        assert row["peers"] == ["UltraDict"], name
        if name == "manager-dict-2proc" and not has_atomics:
            assert "atomics" in row["errors"]["UltraDict"], row["errors"]
            continue
        assert row["errors"] == {}, (name, row["errors"])
        rates = row["rates"]["UltraDict"]
        assert len(rates) == data["rounds"] and all(_positive_finite(r) for r in rates), name
        assert _positive_finite(row["ratio"]["UltraDict"]), name
    assert proc.returncode == (0 if has_atomics else 1), proc.stdout + proc.stderr
    head = next(line for line in proc.stdout.splitlines() if line.startswith("workload"))
    assert head.split()[-1] == "UltraDict"
    assert _ultradict_streams() - before == set()


def test_ultradict_absent_when_not_importable(monkeypatch, tmp_path):
    """Without UltraDict, its column says "absent" and the run goes on (exit 0), as for the
    other peers; --no-peers leaves the column out."""
    monkeypatch.setitem(sys.modules, "UltraDict", None)
    lib = bench.load_peer("UltraDict")
    assert lib.module is None and lib.kind == "peer"
    assert lib.error.startswith(("ImportError", "ModuleNotFoundError")), lib.error

    out = tmp_path / "absent.json"
    code = ("import sys; sys.modules['UltraDict'] = None\n"
            "from fastmp.bench import main\n"
            f"sys.exit(main(['--quick', '--only', 'manager-dict-get', '--json', {str(out)!r}]))\n")
    proc = _run(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    libs = {lib["name"]: lib for lib in data["libs"]}
    assert libs["UltraDict"]["available"] is False and libs["UltraDict"]["kind"] == "peer"
    (row,) = data["results"]
    assert row["peers"] == ["UltraDict"] and "UltraDict" not in row["rates"]
    assert set(row["ratio"]) == {"fastmp"}
    line = next(line for line in proc.stdout.splitlines() if line.startswith("manager-dict-get"))
    assert line.split()[-1] == "absent"
    assert "pip install UltraDict" in proc.stdout

    out = tmp_path / "nopeers.json"
    proc = _run(["-m", "fastmp.bench", "--quick", "--only", "manager-dict-get", "--no-peers",
                 "--json", str(out)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert [lib["name"] for lib in data["libs"]] == ["multiprocessing", "fastmp"]
    assert data["results"][0]["peers"] == []
    head = next(line for line in proc.stdout.splitlines() if line.startswith("workload"))
    assert head.split()[-1] == "spread"           # no peer column


@pytest.mark.skipif(not _importable("UltraDict"), reason="UltraDict is not installed")
def test_a_peer_import_leaves_the_resource_tracker_alone(tmp_path):
    """Importing UltraDict takes shared memory out of the stdlib's resource tracker for the
    whole process; loading it as a peer, and running its rounds, must not: the stdlib and
    fastmp, timed in the same process, register their segments there."""
    code = (
        "from multiprocessing import resource_tracker as rt\n"
        "before = (rt.register, rt.unregister, dict(rt._CLEANUP_FUNCS))\n"
        "import fastmp.bench as bench\n"
        "assert bench.load_peer('UltraDict').module is not None\n"
        "assert (rt.register, rt.unregister, dict(rt._CLEANUP_FUNCS)) == before\n"
        "assert bench.ultradict_dict_set(200) > 0\n"
        "assert (rt.register, rt.unregister, dict(rt._CLEANUP_FUNCS)) == before\n"
        "print('kept')\n")
    proc = _run(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "kept\n", proc.stdout + proc.stderr
