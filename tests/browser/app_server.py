"""Test-only launcher: the all-in-one app on a free loopback port, its amoCRM calls sent to a
fake on loopback.

    python -m tests.browser.app_server <fake amoCRM base URL>

Binds port 0 first, so AMOCRM_REDIRECT_URI can name the real port, then prints one line
`READY http://127.0.0.1:<port>` and serves until terminated. The project reaches amoCRM only at
`https://<subdomain>.amocrm.ru`; here every session the OAuth client makes gets a transport
adapter that reroutes that host to the fake (tests.support.fake_amo_oauth.LoopbackAdapter), so
no production code is changed for the test. Everything else comes from the environment the
test gives this process.
"""

from __future__ import annotations

import os
import sys

import requests
from werkzeug.serving import make_server


def _rerouting_sessions(host: str, target: str) -> None:
    from prometei.amocrm import oauth
    from tests.support.fake_amo_oauth import LoopbackAdapter

    make_session = oauth.make_session

    def rerouted() -> requests.Session:
        session = make_session()
        session.mount(f"https://{host}", LoopbackAdapter(host, target))
        return session

    oauth.make_session = rerouted  # type: ignore[assignment]


def main(fake_url: str) -> None:
    from prometei.services import reset_services
    from prometei.web.apps import create_local_app

    holder: dict[str, object] = {}

    def app(environ: object, start_response: object) -> object:
        return holder["app"](environ, start_response)  # type: ignore[operator]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    os.environ["AMOCRM_REDIRECT_URI"] = f"{base}/api/oauth/callback"
    reset_services()
    _rerouting_sessions(f"{os.environ['AMOCRM_SUBDOMAIN']}.amocrm.ru", fake_url)
    holder["app"] = create_local_app()
    print(f"READY {base}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1])
