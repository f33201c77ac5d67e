"""dmzkit-sso-client: single sign-on for C/S applications, on the user's machine.

    dmzkit-sso-client login --proxy URL --app NAME --user NAME --cert PEM [--key PEM] [--ca PEM]
    dmzkit-sso-client token --app NAME
    dmzkit-sso-client logout

`login` reads the password from standard input, signs in at the SAML proxy
with the device certificate, keeps the SSO ticket in the credential file
and prints a one-time token for the application. `token` prints a fresh
token for any application with the kept ticket, no password. `logout` ends
the ticket and the IdP session behind it. The ticket is bound to the device
certificate's key: the file alone opens nothing. Python's standard library only.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse
from pathlib import Path

from ..files import write_atomically

CREDENTIALS = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "dmzkit-sso" / "credentials.json"
TIMEOUT = 20


class ClientError(Exception):
    pass


def context(cert: str, key: str | None, ca: str | None) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=ca)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(cert, key)
    return tls


def call(proxy: str, path: str, body: dict, tls: ssl.SSLContext, ticket: str | None = None) -> dict:
    url = urllib.parse.urlsplit(proxy)
    connection = http.client.HTTPSConnection(url.hostname, url.port or 443, context=tls, timeout=TIMEOUT)
    headers = {"Content-Type": "application/json"}
    if ticket:
        headers["Authorization"] = f"Bearer {ticket}"
    try:
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise ClientError(f"cannot reach the SSO proxy at {proxy}: {e}") from None
    finally:
        connection.close()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {}
    if response.status != 200:
        raise ClientError(answer.get("error") or f"the SSO proxy answered {response.status}")
    return answer


def save(record: dict) -> None:
    CREDENTIALS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(str(CREDENTIALS), json.dumps(record).encode(), mode=0o600)


def load() -> dict:
    try:
        if CREDENTIALS.stat().st_mode & 0o077:
            raise ClientError(f"{CREDENTIALS} is readable by others; sign in again")
        return json.loads(CREDENTIALS.read_text())
    except FileNotFoundError:
        raise ClientError("not signed in: run dmzkit-sso-client login") from None
    except ValueError:
        raise ClientError(f"{CREDENTIALS} is damaged; sign in again") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-sso-client", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="sign in (password on stdin) and print an application token")
    login.add_argument("--proxy", required=True, help="the SAML proxy, https://host:port")
    login.add_argument("--app", required=True)
    login.add_argument("--user", required=True)
    login.add_argument("--cert", required=True, help="the device certificate (PEM, with its key unless --key)")
    login.add_argument("--key")
    login.add_argument("--ca", help="CA certificates to verify the proxy with")
    token = commands.add_parser("token", help="print an application token, with the kept ticket")
    token.add_argument("--app", required=True)
    commands.add_parser("logout", help="end the ticket and forget it")
    args = parser.parse_args(argv)
    try:
        if args.command == "login":
            password = sys.stdin.readline().rstrip("\n")
            tls = context(args.cert, args.key, args.ca)
            answer = call(args.proxy, "/v1/login", {"app": args.app, "username": args.user, "password": password}, tls)
            save({"proxy": args.proxy, "ticket": answer["ticket"], "user": answer["user"],
                  "cert": os.path.abspath(args.cert), "key": args.key and os.path.abspath(args.key),
                  "ca": args.ca and os.path.abspath(args.ca)})
            print(answer["app_token"])
            return 0
        record = load()
        tls = context(record["cert"], record["key"], record["ca"])
        if args.command == "token":
            print(call(record["proxy"], "/v1/sso", {"app": args.app}, tls, record["ticket"])["app_token"])
            return 0
        try:
            call(record["proxy"], "/v1/logout", {}, tls, record["ticket"])
        finally:
            # Forgotten here whatever the proxy said: an expired ticket is gone there too.
            CREDENTIALS.unlink()
        return 0
    except (ClientError, OSError, ssl.SSLError, KeyError) as e:
        print(f"dmzkit-sso-client: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
