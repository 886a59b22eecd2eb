"""The sandbox that runs environment code: `python -m agentworld.runtime.envcode.zygote CONFIG_JSON`.

envd starts this module once; nothing in envd's own process ever imports an environment's app. Process tree:

    envd (supervisor)
      launcher            enters new network, PID, mount, IPC and UTS namespaces, forks, waits
        base zygote       PID 1: minimal root, unprivileged uid, Landlock, seccomp; imports FastAPI, SQLAlchemy...
          env zygote      one per environment: Landlock narrowed to that environment's session directory, then
            worker ...    imports the app, builds the template database; forks workers (no processes of their own)

Each level talks to envd over its own socket (frames from agentworld.runtime.wire); new sockets and pidfds travel
as SCM_RIGHTS. A zygote reaps its children and reports each exit ({"op": "exited", "pid", "status"}); EOF on its
socket (envd gone) ends it, and with the base zygote (PID 1) the whole namespace goes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import threading

from agentworld.runtime import jail, wire


def _reaper() -> tuple[int, int]:
    """A wakeup pipe written on SIGCHLD, so a zygote's select loop notices exits and reaps them."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    return r, w


def _reap(ctl: socket.socket, forked: set[int]) -> None:
    """Report each exited child we forked; reap (and do not report) the ones we only inherited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in forked:
            forked.discard(pid)
            wire.send(ctl, {"op": "exited", "pid": pid, "status": status})


def _serve(ctl: socket.socket, wake: int, handle: object, forked: set[int], sweep: bool = False) -> None:
    """The zygote loop: requests from envd on `ctl`, child exits via `wake`; returns when envd hangs up. `sweep`
    (the base zygote): kill processes it inherits."""
    while True:
        ready, _, _ = select.select([ctl, wake], [], [])
        if wake in ready:
            while True:
                try:
                    if not os.read(wake, 512):
                        break
                except BlockingIOError:
                    break
            _reap(ctl, forked)
            if sweep:
                _kill_strays(forked)
        if ctl in ready:
            frame = wire.recv(ctl)
            if frame is None:
                return
            handle(*frame)  # type: ignore[operator]


def _fork_child(ctl: socket.socket, wake_fds: tuple[int, int], op: str, extra: dict, child_main: object,
                forked: set[int]) -> None:
    """Fork a child with a socket of its own; send envd the other end and the child's pidfd."""
    mine, theirs = socket.socketpair()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            theirs.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in wake_fds:
                os.close(fd)
            jail.die_with_parent(parent)
            child_main(mine)  # type: ignore[operator]
        finally:
            os._exit(72)
    mine.close()
    forked.add(pid)
    pidfd = os.pidfd_open(pid)
    try:
        wire.send_fds(ctl, {"op": op, "pid": pid, **extra}, [theirs.fileno(), pidfd])
    finally:
        theirs.close()
        os.close(pidfd)


# -------------------------------------------------------------------------------------------- env zygote
def _prepare_app_runtime() -> None:
    """Once, before any app: sync routes run inline (one call at a time per worker, so cancellation reaches them),
    and path parameters reach apps exactly as sent."""
    import anyio.to_thread

    from agentworld.runtime.envcode.asgi import install_exact_path_params

    async def run_sync_inline(func, *args, **_options):  # noqa: ANN001, ANN002, ANN003, ANN202 - anyio's signature
        return func(*args)

    anyio.to_thread.run_sync = run_sync_inline
    install_exact_path_params()


def _load_env(sock: socket.socket, config: dict, request: dict) -> tuple[object, bool]:
    """In the env zygote: confine to this environment, build its template, import its app; report to envd."""
    import sqlite3

    from agentworld.runtime.envcode.app_loader import import_app
    from agentworld.runtime.envcode.connection import build_template
    from agentworld.runtime.errors import BundleLoadError
    from agentworld.runtime.tools import extract_tools

    layers = jail.Layers()
    jail.landlock(config["read_paths"] + jail.READ_SYSTEM_PATHS, [request["env_dir"]], layers)
    env_id, foreign_keys = request["env_id"], request["foreign_keys"]
    try:
        try:
            template = build_template(request["schema_sql"], request["seed_sql"], foreign_keys=foreign_keys)
        except sqlite3.Error as exc:
            raise BundleLoadError(f"{env_id}: schema/seed failed: {exc}") from exc
        _module, app = import_app(env_id, request["app_py"], request["filename"], template)
        try:
            tools = extract_tools(app.openapi())
        except Exception as exc:
            raise BundleLoadError(f"{env_id}: could not build the tool list from the app's routes: {exc}") from exc
        if threading.active_count() > 1:
            raise BundleLoadError(f"{env_id}: app.py started threads while importing; environments may not")
        if _has_children():  # they die with this zygote: the base zygote reaps and kills what it inherits
            raise BundleLoadError(f"{env_id}: app.py started processes while importing; environments may not")
        real_paths = {getattr(r, "operation_id", None) or getattr(r, "unique_id", None): r.path
                      for r in app.routes if hasattr(r, "path")}
        for tool in tools:  # the route's own template, convertors included ({id:int}), for exact routing
            tool.path_template = real_paths.get(tool.name, tool.path_template)
        tables = template.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchone()[0]
        image = template.serialize()
        template.really_close()
    except BundleLoadError as exc:
        wire.send(sock, {"op": "error", "message": str(exc)})
        return None, False
    except BaseException as exc:  # noqa: BLE001 - whatever the app's import did, envd gets a clear message
        wire.send(sock, {"op": "error", "message": f"{env_id}: loading failed: {type(exc).__name__}: {exc}"})
        return None, False
    finally:  # from here on this zygote and its workers send no signals at all
        jail.install_seccomp(jail.SeccompPolicy(base=False, no_signals=True), layers, "seccomp_tenant")
    gc.collect()
    gc.freeze()  # workers share these pages copy-on-write; the collector would otherwise touch them all
    wire.send(sock, {"op": "loaded", "tools": [t.to_dict() for t in tools], "tables": tables,
                     "layers": layers.as_dict()}, image)
    return app, foreign_keys


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _kill_strays(known: set[int]) -> None:
    """In the base zygote (a subreaper): kill any process that became our child without our forking it (what an
    app's import started, orphaned when its zygote exited)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            children = {int(c) for c in f.read().split()}
    except OSError:
        return
    for pid in children - known:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _env_zygote(config: dict, request: dict):  # noqa: ANN202 - returns the child's main
    def main(sock: socket.socket) -> None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # workers inherit it: a cancel before they serve is a no-op
        app, foreign_keys = _load_env(sock, config, request)
        if app is None:
            return
        wake = _reaper()
        forked: set[int] = set()

        def handle(header: dict, _payload: bytes) -> None:
            if header.get("op") == "spawn":
                _fork_child(sock, wake, "worker", {}, _worker_main(app, foreign_keys, header), forked)

        _serve(sock, wake[0], handle, forked)

    return main


def _worker_main(app: object, foreign_keys: bool, spawn: dict):  # noqa: ANN202
    def main(sock: socket.socket) -> None:
        from agentworld.runtime.envcode import worker

        layers = jail.Layers()
        jail.install_seccomp(jail.SeccompPolicy(base=False, no_processes=True), layers, "seccomp_worker")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the file-size limit: EFBIG (an error), not death
        jail.set_rlimits(address_space=spawn["address_space"], file_size=spawn["file_size"],
                         open_files=spawn["open_files"])
        worker.run(sock, app, foreign_keys, spawn["max_response_bytes"])

    return main


# ------------------------------------------------------------------------------------------- base zygote
def _base_zygote(config: dict, ctl: socket.socket, layers: jail.Layers, launcher: int) -> None:
    jail.die_with_parent(launcher)
    if "pidns" in layers.applied:
        binds = jail.system_binds() + [jail.Bind(p) for p in config["read_paths"]]
        binds.append(jail.Bind(config["envs_dir"], writable=True))
        jail.pivot_to_minimal_root(config["root_dir"], binds, layers)
        try:
            socket.sethostname("agentworld-sandbox")
        except OSError:
            pass
    jail.drop_privileges(layers, config["uid"], config["gid"], needs=config["read_paths"])
    jail.set_dumpable(False)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if config.get("keep_stderr") else (0, 1, 2):  # what env code prints goes nowhere
        os.dup2(devnull, fd)
    os.close(devnull)
    jail.no_new_privs(layers)
    jail.prctl(jail.PR_SET_CHILD_SUBREAPER, 1)  # orphans of the sandbox come to us (to be killed), namespace or not
    # /proc to find them (the environments' zygotes narrow Landlock again, without it)
    jail.landlock(config["read_paths"] + jail.READ_SYSTEM_PATHS + ["/proc"], [config["envs_dir"]], layers)
    jail.install_seccomp(jail.SeccompPolicy(), layers)
    jail.set_rlimits(layers=layers)
    import fastapi  # noqa: F401  - what every app imports, once, shared by all environments' zygotes
    import pydantic  # noqa: F401
    import sqlalchemy.dialects.sqlite  # noqa: F401
    import sqlalchemy.orm  # noqa: F401

    import agentworld.runtime.envcode.worker  # noqa: F401
    from agentworld.runtime.tools import extract_tools  # noqa: F401

    _prepare_app_runtime()
    gc.collect()
    gc.freeze()
    wake = _reaper()
    forked: set[int] = set()
    wire.send(ctl, {"op": "ready", "pid": os.getpid(), "layers": layers.as_dict()})

    def handle(header: dict, _payload: bytes) -> None:
        if header.get("op") == "load":
            _fork_child(ctl, wake, "env", {"key": header["key"]}, _env_zygote(config, header), forked)

    _serve(ctl, wake[0], handle, forked, sweep=True)


def main(argv: list[str] | None = None) -> None:
    """The launcher: new namespaces (where allowed), then fork the base zygote and wait for it."""
    config = json.loads((argv or sys.argv[1:])[0])
    ctl = socket.socket(fileno=config["ctl_fd"])
    layers = jail.Layers()
    if config["isolate"]:
        jail.enter_namespaces(layers)
    else:
        for name in ("netns", "pidns", "mountns", "ipcns"):
            layers.lack(name, "isolation turned off (RuntimeConfig.isolate=False)")
    launcher = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _base_zygote(config, ctl, layers, launcher)
        except BaseException as exc:  # noqa: BLE001 - tell envd why the sandbox could not start
            try:
                import traceback

                traceback.print_exc()
                wire.send(ctl, {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
            finally:
                os._exit(1)
        os._exit(0)
    ctl.close()
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
