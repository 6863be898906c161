"""One TLS client context for every outgoing HTTPS connection opsgate makes.

Each httpx client otherwise loads the CA bundle into a context of its own (about 0.8 MiB
apiece, and opsgate holds several clients: the Bot API's two, health checks, webhooks). An
SSLContext is meant to be shared; this one is httpx's default, made once: certifi's bundle, or
SSL_CERT_FILE / SSL_CERT_DIR when set.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """Pass as httpx's `verify=`; verifies exactly as a client left to its default would."""
    return httpx.create_ssl_context()
