"""Throw-away CA and server certificate, made with the openssl CLI, because the SDK insists on TLS with IP SANs."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

_VALID_DAYS = "7"


class CertificateError(RuntimeError):
    """openssl could not produce the certificates the devhub needs."""


@dataclass(frozen=True)
class CertBundle:
    """Paths of the generated CA and server credentials, all inside one private directory."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    def ca_pem(self) -> str:
        """Return the CA certificate as PEM text, the form the SDK and the workload API hand around."""
        return self.ca_cert.read_text(encoding="ascii")


def generate_certs(directory: Path, ip: str, dns_names: tuple[str, ...] = ("localhost",)) -> CertBundle:
    """Create a CA and a server certificate for `ip` and `dns_names` in `directory`; keys are owner-only."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    server_key, server_csr, server_cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext_file = directory / "server.ext"
    san = ",".join([f"IP:{ip}", *(f"DNS:{name}" for name in dns_names)])
    ext_file.write_text(
        "\n".join(
            [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=serverAuth",
                f"subjectAltName={san}",
                "subjectKeyIdentifier=hash",
                "authorityKeyIdentifier=keyid,issuer",
                "",
            ]
        ),
        encoding="ascii",
    )
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec_key, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", _VALID_DAYS,
        "-subj", "/CN=visionedge devhub CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", "-new", *ec_key, "-keyout", str(server_key), "-out", str(server_csr), "-subj", f"/CN={ip}")
    _openssl(
        "x509", "-req", "-in", str(server_csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(server_cert), "-days", _VALID_DAYS, "-sha256", "-extfile", str(ext_file),
    )  # fmt: skip
    for key in (ca_key, server_key):
        os.chmod(key, 0o600)
    _log.debug("generated devhub CA and server certificate for %s in %s", san, directory)
    return CertBundle(directory=directory, ca_cert=ca_cert, server_cert=server_cert, server_key=server_key)


def _openssl(*args: str) -> None:
    """Run one openssl command, turning a failure into a CertificateError that carries openssl's own words."""
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as err:
        raise CertificateError(
            "the openssl command is not installed: the devhub needs it to make certificates"
        ) from err
    except subprocess.CalledProcessError as err:
        raise CertificateError(f"openssl {args[0]} failed: {err.stderr.strip()}") from err
