"""An identity provider for tests: signing keys made in the test, a JWKS served over HTTP
from a thread, and tokens signed with those keys (or forged without them)."""

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/realms/video"
AUDIENCE = "video-balancer"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def make(cls, kid: str, algorithm: str = "RS256") -> "SigningKey":
        private: Any
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        return cls(kid, algorithm, private)

    @property
    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any]
        key = self.private.public_key()
        if self.algorithm == "RS256":
            public = RSAAlgorithm.to_jwk(key, as_dict=True)
        elif self.algorithm == "ES256":
            public = ECAlgorithm.to_jwk(key, as_dict=True)
        else:
            public = OKPAlgorithm.to_jwk(key, as_dict=True)
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def token(self, claims: dict[str, Any] | None = None, **header: Any) -> str:
        """A token signed with this key: a valid one for `claims` over the defaults (a
        claim given as None is left out)."""
        return jwt.encode(
            payload(claims),
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **header},
        )


def payload(claims: dict[str, Any] | None = None) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    merged = {**base, **(claims or {})}
    return {name: value for name, value in merged.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token written by hand: HMAC-SHA256 with `secret`, or no signature at all."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class JwksServer:
    """Serves `keys` as a JWKS at `url`; `down` answers 503 instead. `fetches` counts the
    requests it answered (or refused)."""

    keys: list[SigningKey]
    url: str = ""
    down: bool = False
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self) -> bytes:
        return json.dumps({"keys": [key.jwk for key in self.keys]}).encode()


@contextmanager
def jwks_server(keys: list[SigningKey]) -> Iterator[JwksServer]:
    served = JwksServer(keys)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with served.lock:
                served.fetches += 1
            if served.down:
                self.send_error(503)
                return
            body = served.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
