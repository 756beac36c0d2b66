"""gcs_emulator(): a local GCS (gcp-storage-emulator on 127.0.0.1) for gs:// tests and benchmarks.

Inside the ``with`` block Beam's ``FileSystems`` (and every subprocess that
inherits the environment) reads and writes ``gs://`` on the emulator, with
fake credentials that never reach Google; on exit the server is stopped and
the environment restored.  Nothing here touches the network beyond 127.0.0.1.
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
import types
import urllib.request

# ADC that google.auth.default() accepts at once and never refreshes, so Beam's auth
# skips its ~20 s retry loop; token_uri is a closed local port so a refresh fails fast.
_ADC = {"type": "authorized_user", "client_id": "x", "client_secret": "x",
        "refresh_token": "x", "token": "emulator", "expiry": "2999-01-01T00:00:00Z",
        "token_uri": "http://127.0.0.1:9/token"}
# Emulator process: (1) --in-memory still re-dumps ALL metadata as JSON on every write
# (O(N) per write, never read back) -> skip; (2) exit when our parent dies (no orphans).
_LAUNCHER = r"""
import os, sys, threading, time
from gcp_storage_emulator import storage as _s
_orig = _s.Storage._write_config_to_file
def _write(self):
    if not getattr(self._store, "_use_memory", False): _orig(self)
_s.Storage._write_config_to_file = _write
_ppid = int(sys.argv.pop(1))
def _watch():
    while os.getppid() == _ppid: time.sleep(0.5)
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy


def _http(method, url, body=None, timeout=2.0):
    req = urllib.request.Request(url, method=method, headers={"Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with _OPENER.open(req, timeout=timeout) as r:
        return r.read()


def _reset_beam_auth_cache():  # Beam caches the credential lookup once per process
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init, auth._Credentials._credentials = False, None


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait(5)


@contextlib.contextmanager
def gcs_emulator(buckets=("test-bucket",), project="emulator-project", start_timeout=30.0):
    tmp = tempfile.mkdtemp(prefix="gcs_emulator_")
    adc, log_path = os.path.join(tmp, "adc.json"), os.path.join(tmp, "emulator.log")
    with open(adc, "w") as f:
        json.dump(_ADC, f)
    os.makedirs(os.path.join(tmp, "gcloud"))
    log, proc, saved = open(log_path, "ab"), None, {}
    try:
        for _ in range(3):  # retry if another process grabbed the free port meanwhile
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), "start", "--host=127.0.0.1",
                 f"--port={port}", "--in-memory", "-q"], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + start_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if _http("GET", f"http://127.0.0.1:{port}/", timeout=0.5) == b"OK":
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                _stop(proc); proc = None; continue
            break
        if proc is None:
            with open(log_path, errors="replace") as f:
                raise RuntimeError("gcp-storage-emulator did not start:\n" + f.read()[-2000:])
        endpoint = f"http://127.0.0.1:{port}"
        for b in buckets:  # soft delete off (default 7 d keeps deleted data in RAM)
            _http("POST", f"{endpoint}/storage/v1/b?project={project}", {"name": b})
            _http("PATCH", f"{endpoint}/storage/v1/b/{b}",
                  {"softDeletePolicy": {"retentionDurationSeconds": "0"}})
        no_proxy = ",".join(filter(None, ("127.0.0.1,localhost", os.environ.get("NO_PROXY"))))
        env = {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_APPLICATION_CREDENTIALS": adc,
               "GOOGLE_CLOUD_PROJECT": project, "CLOUDSDK_CONFIG": os.path.join(tmp, "gcloud"),
               "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9",
               "GCE_METADATA_IP": "127.0.0.1:9", "NO_PROXY": no_proxy, "no_proxy": no_proxy}
        for k, v in env.items():
            saved[k] = os.environ.get(k)
            os.environ[k] = v
        _reset_beam_auth_cache()
        yield types.SimpleNamespace(host="127.0.0.1", port=port, endpoint=endpoint,
                                    buckets=tuple(buckets), env=dict(env), log_path=log_path)
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
