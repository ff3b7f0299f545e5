"""Starts the Finch emulator binary (built by scripts/test.sh) on a random port."""

import json
import os
import pathlib
import subprocess
import threading
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENT_ID = "7f4c5a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"
CLIENT_SECRET = "finch-emulator-secret"


@pytest.fixture()
def emulator():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "finch-emulator"
    assert binary.exists(), f"{binary} is missing: run scripts/test.sh (it builds the emulator)"
    proc = subprocess.Popen([str(binary), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()  # "listening on http://127.0.0.1:PORT": printed once ready
        assert line.startswith("listening on "), line
        # Keep reading what it prints, or a full pipe would stall it mid-request.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def control(base, path, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
