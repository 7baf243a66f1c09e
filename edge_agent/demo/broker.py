"""A private mosquitto on a free loopback port, for the demo and the tests.

It can be stopped, killed and started again on the same port, so that tests can
take the broker away and bring it back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, alive=lambda: True) -> bool:
    """True once 127.0.0.1:port accepts a connection, while ``alive()`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def mosquitto_binary() -> str:
    # Debian installs it in /usr/sbin, which is not on a normal user's PATH.
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError("mosquitto is not installed; run `make demo` or "
                                "`sudo apt-get install mosquitto`")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """PEM files that make the listener a TLS one: the CA that signs accepted client
    certificates, and the server's own certificate and key.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True  # refuse clients without a certificate from ca_file


class Mosquitto:
    """A mosquitto process of our own, listening on 127.0.0.1 only (TLS if ``tls``)."""

    def __init__(self, port: int | None = None, workdir: Path | None = None,
                 persistent: bool = False, tls: TlsFiles | None = None,
                 users: dict[str, str] | None = None, acl: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-agent-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.tls = tls
        self.users = users  # user -> password; then anonymous clients are refused
        self.acl = acl  # mosquitto acl_file lines; then what they do not grant is refused
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",  # the default 1000 drops a backlog silently
        ]
        if self.tls is not None:
            # Options after a listener line belong to that listener.
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}",
                      f"keyfile {self.tls.key_file}",
                      f"require_certificate {str(self.tls.require_certificate).lower()}"]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", which cannot
            # write our temporary directory nor read certificates there (FIELD_NOTES.md §6).
            lines.append("user root")
        if self.persistent:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 1", "autosave_on_changes true"]
        if self.users:
            passwords = self.workdir / "passwords"
            passwords.write_text("")
            for user, password in self.users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b",
                                str(passwords), user, password], check=True)
            lines.append(f"password_file {passwords}")
        if self.acl is not None:
            acl = self.workdir / "acl"
            acl.write_text("\n".join(self.acl) + "\n")
            lines.append(f"acl_file {acl}")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        conf = self._write_config()
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        alive = lambda: self.proc is not None and self.proc.poll() is None  # noqa: E731
        # An open port is not enough: a broker can accept and then die (FIELD_NOTES.md §6).
        if not wait_for_port(self.port, timeout_s, alive) or not alive():
            stderr = self.proc.stderr.read().decode(errors="replace") if not alive() else ""
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}: "
                               f"{stderr.strip()} {log.strip()[-500:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker (SIGTERM: clean, saves persistence; SIGKILL: abrupt)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
