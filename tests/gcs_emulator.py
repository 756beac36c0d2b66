"""Local GCS emulator for tests: Beam FileSystems gs:// I/O with no real Google traffic.

Usage:
    with gcs_emulator(buckets=("test-bucket",)) as emu:
        FileSystems.create("gs://test-bucket/a.txt") ...
        subprocess.run([...])          # children inherit emu.env via os.environ
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

# Valid-looking ADC that never needs a refresh: google.auth.default() returns it at once,
# so Beam's auth._Credentials skips its retry loop (4 retries, 2-16 s backoff, ~20 s per
# process) that runs when no credentials are found. token_uri points at a closed local
# port so an unexpected refresh fails fast instead of contacting oauth2.googleapis.com.
_FAKE_ADC = {
    "type": "authorized_user",
    "client_id": "emulator",
    "client_secret": "emulator",
    "refresh_token": "emulator",
    "token": "emulator-token",
    "expiry": "2999-01-01T00:00:00Z",
    "token_uri": "http://127.0.0.1:9/token",
}
_DEAD = "127.0.0.1:9"  # nothing listens here -> immediate connection refused


@dataclass
class GcsEmulator:
    host: str
    port: int
    endpoint: str  # e.g. http://127.0.0.1:41234
    buckets: tuple
    env: dict = field(default_factory=dict)  # the variables set; pass to subprocesses
    log_path: str = ""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method, url, body=None, timeout=2.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(req, timeout=timeout) as r:
        return r.status, r.read()


def _reset_beam_auth_cache():
    # Beam caches the credentials lookup once per process (success or failure).
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init = False
        auth._Credentials._credentials = None


# Runs in the emulator process. (1) In --in-memory mode the emulator still re-serialises
# ALL object metadata to an in-memory ".meta" JSON on every write (never read back):
# O(N) per write, O(N^2) to fill a bucket. Skip it. (2) Exit if our parent dies (e.g. the
# test process is SIGKILLed and our finally never runs), so no orphan keeps the port.
_LAUNCHER = r"""
import os, sys, threading, time
from gcp_storage_emulator import storage as _s
_orig = _s.Storage._write_config_to_file
def _write(self):
    if not getattr(self._store, "_use_memory", False):
        _orig(self)
_s.Storage._write_config_to_file = _write
_ppid = int(sys.argv.pop(1))
def _watch():
    while os.getppid() == _ppid:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


def _start(port, log):
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(os.getpid()), "start", "--host=127.0.0.1",
         f"--port={port}", "--in-memory", "-q"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)  # no terminal signals; we stop it ourselves


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def gcs_emulator(buckets=("test-bucket",), project="emulator-project", start_timeout=30.0):
    tmp = tempfile.mkdtemp(prefix="gcs_emulator_")
    log_path = os.path.join(tmp, "emulator.log")
    adc = os.path.join(tmp, "adc.json")
    with open(adc, "w") as f:
        json.dump(_FAKE_ADC, f)
    os.makedirs(os.path.join(tmp, "gcloud"))
    log = open(log_path, "ab")
    proc = port = None
    saved = {}
    try:
        for _attempt in range(3):  # retry if the free port got taken meanwhile
            port = _free_port()
            proc = _start(port, log)
            deadline = time.monotonic() + start_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if _http("GET", f"http://127.0.0.1:{port}/", timeout=0.5)[1] == b"OK":
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                _stop(proc)
                proc = None
                continue
            break
        if proc is None:
            with open(log_path, errors="replace") as f:
                raise RuntimeError("gcp-storage-emulator did not start:\n" + f.read()[-2000:])
        endpoint = f"http://127.0.0.1:{port}"
        for b in buckets:
            _http("POST", f"{endpoint}/storage/v1/b?project={project}", {"name": b})

        no_proxy = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY")) if x)
        env = {
            "STORAGE_EMULATOR_HOST": endpoint,       # google-cloud-storage -> emulator, no auth
            "GOOGLE_APPLICATION_CREDENTIALS": adc,   # ADC found instantly: no Beam retry loop
            "GOOGLE_CLOUD_PROJECT": project,         # no "No project ID" lookup/warning
            "CLOUDSDK_CONFIG": os.path.join(tmp, "gcloud"),  # ignore a developer's gcloud login
            "NO_GCE_CHECK": "true",                  # google-auth: never probe the metadata server
            "GCE_METADATA_HOST": _DEAD,              # ...and if something does, fail fast locally
            "GCE_METADATA_IP": _DEAD,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy,  # requests must not proxy 127.0.0.1
        }
        for k, v in env.items():
            saved[k] = os.environ.get(k)
            os.environ[k] = v
        _reset_beam_auth_cache()
        yield GcsEmulator("127.0.0.1", port, endpoint, tuple(buckets), dict(env), log_path)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_beam_auth_cache()
        if proc is not None:
            _stop(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
