"""Endpoints and TLS material of an etcd client: parse, load, open a gRPC channel.

Used by :mod:`glia.kvstore.conn`. aetcd opens only insecure channels, so the
client builds its own ``grpc.aio.secure_channel`` with the CA, the client
certificate and its key from :class:`~glia.kvstore.config.EtcdConfig`; etcd
takes the etcd user from the certificate's CN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from glia.kvstore.config import EtcdConfig
from glia.kvstore.errors import KVStoreError

DEFAULT_PORT = 2379

# Channel options, and why:
# - large messages: a watch response may batch many events, a list page many values;
# - keepalive pings while a call is open (a watch, a lease keep-alive) notice a
#   silently dead peer; etcd's default --grpc-keepalive-min-time is 5 s and it
#   rejects pings on idle connections, hence 10 s and no pings without calls;
# - a short reconnect backoff, because glia itself retries with backoff and an
#   etcd restart should be noticed within a second or two, not gRPC's 120 s.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.enable_retries", 0),
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # as configured, for messages
    target: str  # host:port for gRPC
    secure: bool


def parse_endpoint(url: str) -> Endpoint:
    """``https://10.0.0.1:2379``, ``https://[fd00::1]:2379``, ``http://...``, ``host:port``."""
    text = url.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http"):
        raise KVStoreError(f"etcd endpoint {url!r}: scheme must be https or http")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise KVStoreError(f"etcd endpoint {url!r}: bad port") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/"):
        raise KVStoreError(f"etcd endpoint {url!r}: expected scheme://host:port")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Endpoint(url=url, target=target, secure=parts.scheme == "https")


def parse_endpoints(urls: list[str]) -> list[Endpoint]:
    if not urls:
        raise KVStoreError("etcd configuration has no endpoints")
    return [parse_endpoint(u) for u in urls]


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KVStoreError(f"cannot read etcd {what} {path}: {e.strerror}") from None


def load_credentials(cfg: EtcdConfig) -> grpc.ChannelCredentials:
    """TLS credentials from the config's files (read once, at connect)."""
    if (cfg.cert_file is None) != (cfg.key_file is None):
        raise KVStoreError("etcd client certificate and key must be given together")
    root = _read(cfg.ca_file, "CA certificate")
    key = _read(cfg.key_file, "client key")
    cert = _read(cfg.cert_file, "client certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=cert
    )


def open_channel(ep: Endpoint, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if ep.secure:
        if creds is None:
            raise KVStoreError(f"etcd endpoint {ep.url} is https but no TLS credentials are loaded")
        return grpc.aio.secure_channel(ep.target, creds, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(ep.target, options=CHANNEL_OPTIONS)


def certificate_cn(path: str | None) -> str | None:
    """The CN of a client certificate, i.e. the etcd user it authenticates as."""
    data = _read(path, "client certificate")
    if data is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise KVStoreError(
            f"etcd client certificate {path} is not a PEM certificate: {e}"
        ) from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None
