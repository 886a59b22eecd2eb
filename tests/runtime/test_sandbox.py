"""The verifier sandbox, with real zygote subprocesses: verdicts, every escape attempt stopped, pool resilience."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agentworld.runtime.sandbox import SandboxError, SandboxLimits, VerifierPool

VERIFIERS = '''
import sqlite3
import json

def _count(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
    finally:
        conn.close()

def verify_task_0(initial_db_path, final_db_path, final_answer=None):
    before, after = _count(initial_db_path), _count(final_db_path)
    return {"result": "complete" if after == before + 1 else "others", "before": before, "after": after}

def verify_task_1(initial_db_path: str, final_db_path: str, final_answer: str | None = None) -> dict:
    return {"result": "complete" if final_answer and "42" in final_answer else "others"}

def verify_partial(initial_db_path, final_db_path, final_answer=None):
    return {"result": "partially_complete"}

def verify_two_args(initial_db_path, final_db_path):
    return {"result": "complete", "rows": _count(final_db_path)}

def verify_sets_global(initial_db_path, final_db_path, final_answer=None):
    json.leaked_state = "from a previous session"
    return {"result": "complete"}

def verify_sees_global(initial_db_path, final_db_path, final_answer=None):
    return {"result": "others" if hasattr(json, "leaked_state") else "complete"}

def verify_raises(initial_db_path, final_db_path, final_answer=None):
    raise KeyError("missing_column")

def verify_not_a_dict(initial_db_path, final_db_path, final_answer=None):
    return "complete"

def verify_bad_result(initial_db_path, final_db_path, final_answer=None):
    return {"result": "success"}
'''

ATTACKS = {
    "write_file": ('open("/tmp/agentworld-sandbox-pwned", "w").write("x")', "may not write files"),
    "write_db": ('c = sqlite3.connect(final_db_path); c.execute("DELETE FROM reviews"); c.commit()', "readonly"),
    "write_db_uri": ('c = sqlite3.connect(f"file:{final_db_path}?mode=rw", uri=True); '
                     'c.execute("DELETE FROM reviews"); c.commit()', "readonly"),
    "write_db_class": ('c = sqlite3.Connection(final_db_path); c.execute("DELETE FROM reviews"); c.commit()',
                       "read-only"),
    "attach": ('sqlite3.connect(final_db_path).execute("ATTACH \'/tmp/x.db\' AS x")', "not authorized"),
    "socket": ('import socket; s = socket.socket(); s.connect(("127.0.0.1", 22))', "network"),
    "socket_via_dunder": ('__import__("socket").create_connection(("127.0.0.1", 22))', "network"),
    "subprocess": ('import subprocess; subprocess.run(["id"])', "processes"),
    "os_system": ('import os; os.system("id")', "processes"),
    "fork": ('import os; os.fork()', "processes"),
    "read_outside": ('open("/etc/hostname").read()', "may only read"),
    "memory_2gb": ('x = bytearray(2 * 1024 ** 3)', "memory"),
    "ctypes": ('import ctypes', "ctypes"),
}


def _make_db(reviews: int) -> bytes:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO reviews (body) VALUES (?)", [(f"review {i}",) for i in range(reviews)])
    conn.commit()
    data = conn.serialize()
    conn.close()
    return data


INITIAL = _make_db(3)
FINAL = _make_db(4)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=2, limits=SandboxLimits(cpu_seconds=2, memory_mb=256, wall_timeout_s=4)) as p:
        yield p


def _ok(pool: VerifierPool) -> None:
    v = pool.run(source=VERIFIERS, function="verify_task_0", initial_db=INITIAL, final_db=FINAL)
    assert v.outcome == "complete", v.details


def test_correct_verifier_complete_and_others(pool: VerifierPool) -> None:
    v = pool.run(source=VERIFIERS, function="verify_task_0", initial_db=INITIAL, final_db=FINAL)
    assert (v.outcome, v.details["before"], v.details["after"]) == ("complete", 3, 4)
    assert v.duration_ms > 0
    assert pool.run(source=VERIFIERS, function="verify_task_0", initial_db=INITIAL, final_db=INITIAL).outcome == "others"


def test_final_answer_partial_and_two_arg_verifiers(pool: VerifierPool) -> None:
    kw = {"source": VERIFIERS, "initial_db": INITIAL, "final_db": FINAL}
    assert pool.run(function="verify_task_1", final_answer="it is 42", **kw).outcome == "complete"
    assert pool.run(function="verify_task_1", final_answer=None, **kw).outcome == "others"
    assert pool.run(function="verify_partial", **kw).outcome == "partially_complete"
    v = pool.run(function="verify_two_args", **kw)
    assert (v.outcome, v.details["rows"]) == ("complete", 4)


def test_no_state_leaks_between_jobs(pool: VerifierPool) -> None:
    kw = {"source": VERIFIERS, "initial_db": INITIAL, "final_db": FINAL}
    assert pool.run(function="verify_sets_global", **kw).outcome == "complete"
    for _ in range(3):  # whichever zygote serves it, the child is fresh
        assert pool.run(function="verify_sees_global", **kw).outcome == "complete"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_escape_attempts_are_stopped(pool: VerifierPool, name: str) -> None:
    body, expected = ATTACKS[name]
    source = f"import sqlite3\ndef verify_attack(initial_db_path, final_db_path, final_answer=None):\n" \
             f"    {body}\n    return {{'result': 'complete'}}\n"
    v = pool.run(source=source, function="verify_attack", initial_db=INITIAL, final_db=FINAL)
    assert v.outcome == "error", v.details
    assert expected in v.details["error"].lower(), v.details
    assert not Path("/tmp/agentworld-sandbox-pwned").exists()
    _ok(pool)


def test_infinite_loop_hits_cpu_limit(pool: VerifierPool) -> None:
    source = "def verify_spin(a, b, c=None):\n    while True:\n        pass\n"
    start = time.monotonic()
    v = pool.run(source=source, function="verify_spin", initial_db=INITIAL, final_db=FINAL,
                 limits=SandboxLimits(cpu_seconds=1, memory_mb=256, wall_timeout_s=10))
    # 1 CPU-second; on a loaded machine the wall-clock limit may fire first, which is also a correct stop
    assert v.outcome == "error", v.details
    assert "cpu limit" in v.details["error"].lower() or "wall-clock" in v.details["error"], v.details
    assert time.monotonic() - start < 12
    _ok(pool)


def test_sleeping_verifier_hits_wall_clock_limit(pool: VerifierPool) -> None:
    source = "import time\ndef verify_sleep(a, b, c=None):\n    time.sleep(60)\n"
    v = pool.run(source=source, function="verify_sleep", initial_db=INITIAL, final_db=FINAL,
                 limits=SandboxLimits(cpu_seconds=5, memory_mb=256, wall_timeout_s=1))
    assert v.outcome == "error" and "wall-clock" in v.details["error"], v.details
    assert v.duration_ms < 3000
    _ok(pool)


@pytest.mark.parametrize(("function", "message"), [
    ("verify_raises", "KeyError"),
    ("verify_not_a_dict", "expected a dict with a 'result' key"),
    ("verify_bad_result", "expected one of complete, partially_complete, others"),
    ("verify_task_99", "verify_task_0, verify_task_1"),
])
def test_bad_verifiers_give_error_with_message(pool: VerifierPool, function: str, message: str) -> None:
    v = pool.run(source=VERIFIERS, function=function, initial_db=INITIAL, final_db=FINAL)
    assert v.outcome == "error"
    assert message in v.details["error"], v.details


def test_syntax_error_is_reported(pool: VerifierPool) -> None:
    v = pool.run(source="def verify_x(:\n", function="verify_x", initial_db=INITIAL, final_db=FINAL)
    assert v.outcome == "error" and "does not compile" in v.details["error"]


def test_killed_zygote_is_replaced(pool: VerifierPool) -> None:
    before = pool.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    for _ in range(3):
        _ok(pool)
    after = pool.worker_pids()
    assert not set(before) & set(after)


def test_concurrent_runs_from_8_threads(pool: VerifierPool) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for j in range(3):
            final = FINAL if (i + j) % 2 == 0 else INITIAL
            v = pool.run(source=VERIFIERS, function="verify_task_0", initial_db=INITIAL, final_db=final)
            with lock:
                results.append(v.outcome + ("" if v.outcome == ("complete" if final is FINAL else "others") else "!"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 24 and not [r for r in results if r.endswith("!")], results


def test_job_dirs_removed_and_layers_reported(pool: VerifierPool) -> None:
    _ok(pool)
    assert list((pool._root / "jobs").iterdir()) == []
    assert {"fresh_child", "rlimits", "audit_hook", "readonly_db_copies"} <= set(pool.layers)
    if os.geteuid() == 0:  # root can create a network namespace and drop to nobody
        assert {"netns", "uid_drop"} <= set(pool.layers), pool.layers
    if "netns" in pool.layers:  # the zygotes really live in another network namespace
        for pid in pool.worker_pids():
            assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    if "uid_drop" in pool.layers:
        for pid in pool.worker_pids():
            uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert uids == ["65534"] * 4


def test_without_os_layers_the_python_layers_still_hold() -> None:
    with VerifierPool(workers=1, isolate_network=False, drop_privileges=False,
                      limits=SandboxLimits(cpu_seconds=2, memory_mb=256, wall_timeout_s=4)) as p:
        assert "netns" not in p.layers and "uid_drop" not in p.layers
        for name in ("socket", "write_db", "write_file", "subprocess"):
            body, expected = ATTACKS[name]
            source = f"import sqlite3\ndef verify_attack(initial_db_path, final_db_path, final_answer=None):\n" \
                     f"    {body}\n    return {{'result': 'complete'}}\n"
            v = p.run(source=source, function="verify_attack", initial_db=INITIAL, final_db=FINAL)
            assert v.outcome == "error" and expected in v.details["error"].lower(), (name, v.details)
        _ok(p)


def test_closed_pool_refuses_work() -> None:
    p = VerifierPool(workers=1)
    pids = p.worker_pids()
    p.close()
    with pytest.raises(SandboxError):
        p.run(source=VERIFIERS, function="verify_task_0", initial_db=INITIAL, final_db=FINAL)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_scratch_left_by_a_dead_pool_is_swept(pool: VerifierPool) -> None:
    import subprocess

    probe = subprocess.Popen(["true"])  # a pid that no longer exists once waited for
    probe.wait()
    stale = pool._root.parent / f"agentworld-verify-{probe.pid}-leftover"
    (stale / "job").mkdir(parents=True)
    (stale / "job" / "final.db").write_bytes(b"x")
    (stale / "job").chmod(0o555)
    with VerifierPool(workers=1) as fresh:
        assert not stale.exists()
        assert fresh._root.name.startswith(f"agentworld-verify-{os.getpid()}-")
    assert not fresh._root.exists()


# ------------------------------------------------------------------------------- kernel layers (issue 10)
DISARM_AUDIT_HOOK = '''
import gc

def _disarm():
    """What a hostile verifier does first: rewrite the audit hook's closure so that it allows everything."""
    hits = 0
    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") == "hook" and getattr(obj, "__closure__", None):
            for cell in obj.__closure__:
                content = cell.cell_contents
                if isinstance(content, tuple):
                    cell.cell_contents = ()
                elif callable(content):
                    cell.cell_contents = lambda *a, **k: True
                elif isinstance(content, dict):
                    cell.cell_contents = {}
                hits += 1
            obj.__globals__.get("DENIED_IMPORTS", {}).clear()
    return hits
'''

ESCAPES = DISARM_AUDIT_HOOK + '''
import os

def attempt(report, name, fn):
    try:
        report[name] = "ok: " + repr(fn())[:200]
    except BaseException as exc:
        report[name] = f"denied: {type(exc).__name__}: {exc}"[:300]

def verify_escape(initial_db_path, final_db_path, final_answer=None):
    report = {"disarmed": _disarm()}
    target = final_answer or ""
    attempt(report, "python_check_gone", lambda: open("/etc/hostname").read())
    attempt(report, "passwd", lambda: open("/etc/passwd").read())
    attempt(report, "host_file", lambda: open(target.split("|")[0]).read())
    attempt(report, "attach_creates_file", lambda: __import__("_sqlite3").connect(":memory:").execute(
        f"ATTACH '{target.split('|')[1]}' AS x").fetchall())
    attempt(report, "write_file", lambda: open(target.split("|")[1] + ".txt", "w").write("x"))
    attempt(report, "socket", lambda: __import__("socket").socket())
    attempt(report, "kill_init", lambda: os.kill(1, 9))
    return {"result": "others", "report": report}
'''


def test_kernel_layers_hold_with_the_audit_hook_disarmed(pool: VerifierPool, tmp_path: Path) -> None:
    secret = tmp_path / "solutions.jsonl"
    secret.write_text('{"answer": "the reference answer"}\n')
    created = tmp_path / "attached.db"
    v = pool.run(source=ESCAPES, function="verify_escape", initial_db=INITIAL, final_db=FINAL,
                 final_answer=f"{secret}|{created}")
    report = v.details["report"]
    assert report["disarmed"] > 0
    assert "sandbox:" not in report["python_check_gone"], report  # the Python layer really is out of the way
    for name in ("python_check_gone", "passwd", "host_file", "attach_creates_file", "write_file", "socket",
                 "kill_init"):
        assert report[name].startswith("denied"), (name, report[name])
    assert not created.exists() and not Path(f"{created}.txt").exists()


SIGNALLER = DISARM_AUDIT_HOOK + '''
import os, time, signal

def verify_victim(initial_db_path, final_db_path, final_answer=None):
    time.sleep(1.0)
    return {"result": "complete"}

def verify_attacker(initial_db_path, final_db_path, final_answer=None):
    _disarm()
    sent = 0
    for pid in range(1, 1 << 15):
        for send in (lambda: os.kill(pid, signal.SIGKILL),
                     lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)):
            try:
                send()
                sent += 1
            except (OSError, AttributeError):
                pass
    return {"result": "others", "sent": sent}
'''


def test_a_verifier_cannot_signal_another_tenants_verification(pool: VerifierPool) -> None:
    results: dict[str, object] = {}
    victim = threading.Thread(target=lambda: results.update(victim=pool.run(
        source=SIGNALLER, function="verify_victim", initial_db=INITIAL, final_db=FINAL)))
    victim.start()
    attacker = pool.run(source=SIGNALLER, function="verify_attacker", initial_db=INITIAL, final_db=FINAL)
    victim.join()
    assert attacker.details.get("sent") == 0, attacker.details
    assert results["victim"].outcome == "complete", results["victim"]
