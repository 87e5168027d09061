"""A throwaway CA and a server certificate for 127.0.0.1 (trustme), written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certs:
    chain: str  # server certificate chain
    key: str  # server private key
    ca: str  # the CA clients trust

    @property
    def server(self) -> tuple[str, str]:
        return self.chain, self.key


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certs = Certs(str(directory / "chain.pem"), str(directory / "key.pem"), str(directory / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(certs.chain)
    cert.private_key_pem.write_to_path(certs.key)
    ca.cert_pem.write_to_path(certs.ca)
    return certs
