"""Input edges: arguments are checked before any environment code runs, errors echo little, bundles must match
their hash, and one message-size limit holds on every side. Real envd over gRPC on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from agentworld.bundle import load_bundle
from agentworld.client import EnvClient, InvalidArgumentError
from agentworld.runtime import EnvRuntime
from agentworld.runtime.errors import BundleLoadError
from agentworld.v1 import env_pb2, env_pb2_grpc
from tests.runtime.hostile_env import hostile_bundle
from tests.waiting import wait_until

BAD_ARGUMENTS = [
    ('{"label": ' + "[" * 50 + "1" + "]" * 50 + "}", "field 'label.*nests deeper than 32 levels"),
    ('{"label": ' + "[" * 100_000 + "]" * 100_000 + "}", "nest deeper than 32 levels"),
    ('{"label": "\\ud800"}', "field 'label': text holds a lone surrogate"),
    ('{"label": "x", "\\udfff": 1}', "lone surrogate"),
    ('{"label": 9223372036854775808}', "field 'label': integer .* outside the 64-bit range"),
    ('{"label": -9223372036854775809}', "outside the 64-bit range"),
    ('{"label": NaN}', "NaN, which is not a JSON number"),
    ('{"label": -Infinity}', "-Infinity, which is not a JSON number"),
    ('{"label": 1e400}', "field 'label': inf is not a finite number"),
    ('{"label": [1, {"deep": [2, 3e999]}]}', r"field 'label\[1\]\.deep\[1\]'"),
]


@pytest.fixture(scope="module")
def hostile_envd(tmp_path_factory):
    from agentworld.transport.grpc_server import serve_in_thread

    runtime = EnvRuntime([load_bundle(hostile_bundle(tmp_path_factory.mktemp("inputs")))])
    with serve_in_thread(runtime) as server:
        yield server


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_arguments_apps_cannot_take_are_refused_naming_the_field(hostile_envd, arguments, message):
    with EnvClient(hostile_envd.address) as c, c.create_session("hostile") as session:
        before = session.state_hash()
        with pytest.raises(InvalidArgumentError, match=message):
            session.call_tool("add_mark", arguments)
        assert session.state_hash() == before


def test_an_int64_at_the_edge_is_still_accepted(hostile_envd):
    with EnvClient(hostile_envd.address) as c, c.create_session("hostile") as session:
        assert session.call_tool("echo_path", {"value": str(2**63 - 1)}).json()["value"] == str(2**63 - 1)


def test_error_messages_do_not_echo_huge_values(hostile_envd):
    huge = "s-" + "x" * (10 << 20)
    with grpc.insecure_channel(hostile_envd.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = env_pb2_grpc.EnvServiceStub(ch)
        for call in (lambda: stub.CallTool(env_pb2.CallToolRequest(session_id=huge, tool_name="list_marks")),
                     lambda: stub.CreateSession(env_pb2.CreateSessionRequest(env_id=huge)),
                     lambda: stub.Restore(env_pb2.RestoreRequest(session_id=huge, snapshot_id=huge))):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
            assert len(err.value.details()) < 500 and "characters" in err.value.details()


def test_a_bundle_whose_files_changed_is_refused_at_load(tmp_path: Path):
    bundle_dir = hostile_bundle(tmp_path)
    app = bundle_dir / "app.py"
    app.write_text(app.read_text() + "\n# edited after the bundle was written\n")
    with pytest.raises(BundleLoadError, match="do not match env.json's content_hash"):
        EnvRuntime([load_bundle(bundle_dir)])
    proc = subprocess.run([sys.executable, "-m", "agentworld", "serve", str(bundle_dir), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "content_hash" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("code", "message"), [
    ("import os\nif os.fork() == 0:\n    import time\n    time.sleep(3600)\n", "started processes while importing"),
    ("import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n",
     "started threads while importing"),
    ("import os\nos._exit(3)\n", "loading failed: its process exited with status 3"),
])
def test_an_app_whose_import_leaves_something_running_is_refused(tmp_path: Path, code: str, message: str):
    import psutil

    from agentworld.runtime.envcode.host import Sandbox
    from tests.runtime.hostile_env import APP

    bundle = load_bundle(hostile_bundle(tmp_path))
    bundle.app_py = code + APP
    bundle.path = None  # an in-memory bundle: its content hash is not checked
    with Sandbox() as sandbox:  # shared, as validation shares it: it outlives the refused bundle
        with pytest.raises(BundleLoadError, match=message):
            EnvRuntime([bundle], sandbox=sandbox)
        launcher = psutil.Process(sandbox.launcher_pid)

        def only_the_base_zygote_left() -> bool:  # what the import started was killed, not left to linger
            return len([p for p in launcher.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]) == 1

        wait_until(only_the_base_zygote_left, "the refused environment's processes to end")
        EnvRuntime([load_bundle(hostile_bundle(tmp_path / "good"))], sandbox=sandbox).close()  # still serves


def test_one_message_size_limit_everywhere():
    from agentworld import limits
    from agentworld.client._channel import CHANNEL_OPTIONS
    from agentworld.gateway import server as gateway_server
    from agentworld.transport import grpc_server

    client_limits = {v for k, v in CHANNEL_OPTIONS if k.endswith("message_length")}
    assert client_limits == {limits.MAX_MESSAGE_BYTES}
    assert grpc_server.GRPC_SERVER_OPTIONS is gateway_server.GRPC_SERVER_OPTIONS is limits.GRPC_SERVER_OPTIONS
    assert {v for k, v in limits.GRPC_SERVER_OPTIONS if k.endswith("message_length")} == {limits.MAX_MESSAGE_BYTES}
    assert limits.MAX_DATABASE_BYTES < limits.MAX_MESSAGE_BYTES  # an exported snapshot always fits in a message
