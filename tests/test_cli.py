"""run.py as a user runs it: token, migrate, and serve printing its URL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt

from storage.database import Database
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_py(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_token_prints_one_signed_line(tmp_path: Path) -> None:
    env = {**os.environ, "VAR_DIR": str(tmp_path)}
    env.pop("JWT_SECRET", None)
    result = run_py("token", "--user", "alice", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    secret = (tmp_path / "jwt_secret").read_text().strip()
    claims = jwt.decode(lines[0], secret, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == "alice" and claims["exp"] > time.time()
    # A second token is signed with the same kept secret.
    again = run_py("token", "--user", "bob", env=env)
    assert jwt.decode(again.stdout.strip(), secret, algorithms=["HS256"], audience="authenticated")["sub"] == "bob"


def test_migrate_against_database_url(database: Database, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database.url, "VAR_DIR": str(tmp_path)}
    result = run_py("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "migrations applied" in result.stdout


def test_serve_prints_its_url_then_answers(database: Database, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database.url, "VAR_DIR": str(tmp_path), "DEV_MODE": "1",
           "PIPELINE": "loopback", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"Serving on http://127.0.0.1:{port}", (line, proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert b"Connect" in resp.read()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_a_missing_cloud_setting_stops_the_server_with_one_line_naming_it(database: Database, tmp_path: Path) -> None:
    base = {**os.environ, "DATABASE_URL": database.url, "VAR_DIR": str(tmp_path), "DEV_MODE": "1",
            "PIPELINE": "voice", "PORT": str(free_port())}  # fmt: skip
    for env, variable in (
        ({"STT_ENGINE": "google"}, "GOOGLE_CLOUD_PROJECT"),
        ({"AGENT_ENGINE": "vertex"}, "VERTEX_AGENT_ENGINE"),
        ({"TTS_ENGINE": "google", "GOOGLE_TTS_ENDPOINT": "no-port-here"}, "GOOGLE_TTS_ENDPOINT"),
        ({"ENGINE_FALLBACK": "sometimes"}, "ENGINE_FALLBACK"),
    ):
        result = run_py(env={**base, **env})
        assert result.returncode != 0 and "Serving on" not in result.stdout, (env, result.stdout)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and variable in errors[0], (env, result.stderr[-2000:])
