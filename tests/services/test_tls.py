import ssl

import httpx
import pytest
from telegram.request import HTTPXRequest

from services.tls import client_context


def test_one_context_verifying_as_httpx_would() -> None:
    context = client_context()
    assert client_context() is context
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


def test_clients_given_it_load_no_bundle_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the sharing rests on: httpx, and PTB's request through httpx_kwargs, take the
    context as given instead of building one (each build loads the CA bundle again)."""
    context = client_context()
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    httpx.AsyncClient(verify=context)
    HTTPXRequest(connection_pool_size=1, httpx_kwargs={"verify": context})
    assert made == []
    httpx.AsyncClient()  # the default, for contrast: the count does see a new context
    assert len(made) == 1
