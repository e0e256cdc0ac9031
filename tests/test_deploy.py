"""The deploy recipe: nginx accepts the site as shipped, its limits match the app's, the units are valid and hardened."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from webapp.config import config_from_environment

DEPLOY = REPO / "deploy"
SNIPPET = DEPLOY / "nginx" / "privascan-proxy.conf"
SITE = DEPLOY / "nginx" / "privascan.conf"
sys.path.insert(0, str(REPO / "scripts"))
from nginx_front import NGINX, nginx_problem  # noqa: E402

sys.path.remove(str(REPO / "scripts"))


def directive(text: str, name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", text, re.MULTILINE)
    assert len(found) == 1, (name, found)
    return found[0].strip()


def megabytes(value: str) -> int:
    assert value.endswith("m"), value
    return int(value[:-1]) * 1024 * 1024


def test_nginx_limits_match_the_apps():
    text = SNIPPET.read_text()
    defaults = config_from_environment()
    # Bodies up to the app's cap are accepted, and every one of them fits the in-memory buffer.
    assert megabytes(directive(text, "client_max_body_size")) == defaults["MAX_CONTENT_LENGTH"]
    assert megabytes(directive(text, "client_body_buffer_size")) == defaults["MAX_CONTENT_LENGTH"]
    assert directive(text, "client_header_timeout") == f"{defaults['HEADER_TIMEOUT']:g}s"
    assert directive(text, "proxy_max_temp_file_size") == "0"
    assert directive(text, "proxy_request_buffering") == "on"
    assert int(directive(text, "proxy_read_timeout").rstrip("s")) > defaults["API_TIMEOUT"]
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port"):
        assert re.search(rf"proxy_set_header {header} \$", text), header  # nginx's own value, not the client's
    site = SITE.read_text()
    assert int(directive(site, "keepalive_timeout").rstrip("s")) < defaults["HEADER_TIMEOUT"]  # upstream reuse ends first
    assert site.count("access_log off;") == 2
    assert "$host" not in site.split("server {")[1]  # the HTTP redirect goes to a fixed name, not the Host header


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "triage.clinic.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_nginx_accepts_the_site_as_shipped():
    problem = nginx_problem()
    if problem:
        pytest.skip(problem)
    config_dir = Path(tempfile.mkdtemp(prefix="privascan-nginx-conf-"))  # config and a throwaway test certificate
    runtime = Path(tempfile.mkdtemp(prefix="privascan-nginx-", dir="/dev/shm"))
    try:
        cert, key = self_signed(config_dir)
        site = (SITE.read_text().replace("/etc/nginx/snippets/privascan-proxy.conf", str(SNIPPET))
                .replace("/etc/ssl/privascan/fullchain.pem", str(cert)).replace("/etc/ssl/privascan/privkey.pem", str(key)))
        (config_dir / "privascan.conf").write_text(site)
        (config_dir / "nginx.conf").write_text(
            f"pid {runtime}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
            f"http {{\n  client_body_temp_path {runtime}/body;\n  proxy_temp_path {runtime}/proxy;\n"
            f"  fastcgi_temp_path {runtime}/fastcgi;\n  uwsgi_temp_path {runtime}/uwsgi;\n  scgi_temp_path {runtime}/scgi;\n"
            f"  include {config_dir / 'privascan.conf'};\n}}\n")
        done = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(runtime), "-c", str(config_dir / "nginx.conf")],
                              capture_output=True, text=True, check=False, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


UNIT_SETTINGS = {
    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
    "MemorySwapMax": "0", "LimitCORE": "0", "IPAddressDeny": "any", "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("unit", ["privascan.service", "privascan-worker.service"])
def test_the_units_enforce_the_privacy_promise_and_are_valid(unit, tmp_path):
    text = (DEPLOY / "systemd" / unit).read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))
    for name, value in UNIT_SETTINGS.items():
        assert settings.get(name) == value, (unit, name, settings.get(name))
    assert settings["MemoryMax"].endswith("G")
    assert "ReadWritePaths" not in settings  # nothing on disk is writable for the service
    assert settings["ExecStart"].startswith("/opt/privascan/venv/bin/privascan ")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not checked")
    checked = tmp_path / unit
    checked.write_text(text.replace(settings["ExecStart"], "/bin/true"))  # verify wants an existing program
    done = subprocess.run([analyze, "verify", str(checked)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ignoring" not in done.stdout + done.stderr, done.stdout + done.stderr  # an unknown key or bad value is only warned about
