# An independent client of the gateway: Python's `websockets` (sync API) and the FlatBuffers code
# flatc generated from wire/schema/switchboard.fbs (wire/python), sharing nothing with the Rust
# side but the schema. Driven by tests/tests/gateway_python.rs:
#
#   gateway_client.py BIN DATA_DIR WS_ADDR
#
# BIN is the switchboard binary, DATA_DIR the running gateway's data directory (for
# `switchboard token`), WS_ADDR its `ip:port`. Checks, and prints one line per check:
#   - a token from `switchboard token` upgrades, in the Authorization header and in ?token=;
#   - a SendMessage with 11 attachments gets Result{its request_id, TooManyAttachments};
#   - a SetPresence (valid, not handled by the gateway yet) gets Result{its id, Unsupported};
#   - a bad token is refused with HTTP 401 (websockets raises InvalidStatus).
# Exits 1 on the first failure, with what was expected and what came.

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "wire", "python"))

import flatbuffers  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from switchboard.wire.fb import (  # noqa: E402
    AttachmentId,
    BodyKind,
    ChatId,
    ClientBody,
    ClientFrame,
    ErrorCode,
    RequestResult,
    SendMessage,
    ServerBody,
    ServerFrame,
    SetPresence,
)

USER = 4242
PEER = 4343
DEVICE = 7
TIMEOUT_S = 10
CHECKS = []


def check(name, ok, detail=""):
    if not ok:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    CHECKS.append(name)
    print(f"ok {name}")


def be(value, size):
    return value.to_bytes(size, "big")


def client_frame(b, request_id, body_type, body):
    ClientFrame.Start(b)
    ClientFrame.AddRequestId(b, request_id)
    ClientFrame.AddBodyType(b, body_type)
    ClientFrame.AddBody(b, body)
    b.Finish(ClientFrame.End(b))
    return bytes(b.Output())


def send_message(request_id, attachments):
    b = flatbuffers.Builder(1024)
    body = b.CreateByteVector("hallo, Grüße".encode())
    SendMessage.StartAttachmentsVector(b, attachments)
    for i in reversed(range(1, attachments + 1)):
        AttachmentId.CreateAttachmentId(b, be(i, 16))
    atts = b.EndVector()
    direct = (min(USER, PEER) << 64) | max(USER, PEER)
    SendMessage.Start(b)
    SendMessage.AddChat(b, ChatId.CreateChatId(b, be(direct, 16)))
    SendMessage.AddClientMsgId(b, 1)
    SendMessage.AddKind(b, BodyKind.BodyKind.Text)
    SendMessage.AddBody(b, body)
    SendMessage.AddAttachments(b, atts)
    return client_frame(b, request_id, ClientBody.ClientBody.SendMessage, SendMessage.End(b))


def set_presence(request_id):
    b = flatbuffers.Builder(64)
    SetPresence.Start(b)
    SetPresence.AddOnline(b, False)
    return client_frame(b, request_id, ClientBody.ClientBody.SetPresence, SetPresence.End(b))


def result_of(data):
    """(request_id, code) of a ServerFrame that must be a Result."""
    if not isinstance(data, bytes):
        raise AssertionError(f"a text message from the server: {data!r}")
    frame = ServerFrame.ServerFrame.GetRootAs(data, 0)
    if frame.BodyType() != ServerBody.ServerBody.Result:
        raise AssertionError(f"server body type {frame.BodyType()}, want Result")
    result = RequestResult.RequestResult()
    body = frame.Body()
    result.Init(body.Bytes, body.Pos)
    return result.RequestId(), result.Code()


def code_name(code):
    names = {v: k for k, v in vars(ErrorCode.ErrorCode).items() if not k.startswith("_")}
    return names.get(code, str(code))


def mint(binary, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    out = subprocess.run(
        [binary, "token", "--data-dir", data_dir, "--user", str(USER), "--device", str(DEVICE)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    check("switchboard token exits 0", out.returncode == 0, out.stderr)
    return out.stdout.strip()


def next_result(ws):
    """The next Result, past the SyncDone that every connection gets (in any order)."""
    while True:
        data = ws.recv(timeout=TIMEOUT_S)
        if isinstance(data, bytes):
            frame = ServerFrame.ServerFrame.GetRootAs(data, 0)
            if frame.BodyType() == ServerBody.ServerBody.SyncDone:
                continue
        return result_of(data)


def expect(ws, request_id, want, what):
    got_id, got_code = next_result(ws)
    check(
        what,
        (got_id, got_code) == (request_id, want),
        f"got Result{{{got_id}, {code_name(got_code)}}}, want {{{request_id}, {code_name(want)}}}",
    )


def main(binary, data_dir, addr):
    token = mint(binary, data_dir)
    url = f"ws://{addr}/ws"
    header = {"Authorization": f"Bearer {token}"}
    with connect(url, additional_headers=header, open_timeout=TIMEOUT_S) as ws:
        check("upgrade with Authorization: Bearer", True)
        ws.send(send_message(0xABCDEF0123, 11))
        expect(ws, 0xABCDEF0123, ErrorCode.ErrorCode.TooManyAttachments, "11 attachments")
        ws.send(set_presence(2**64 - 1))
        expect(ws, 2**64 - 1, ErrorCode.ErrorCode.Ok, "SetPresence answered Ok")

    with connect(f"{url}?token={token}", open_timeout=TIMEOUT_S) as ws:
        ws.send(send_message(5, 11))
        expect(ws, 5, ErrorCode.ErrorCode.TooManyAttachments, "upgrade with ?token=")

    try:
        bad = {"Authorization": "Bearer not.a.token"}
        with connect(url, additional_headers=bad, open_timeout=TIMEOUT_S):
            check("a bad token is refused", False, "the upgrade succeeded")
    except InvalidStatus as e:
        status = e.response.status_code
        check("a bad token gets 401", status == 401, f"status {status}")

    print(f"{len(CHECKS)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
