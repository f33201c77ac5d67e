"""A user's headless Chromium signing in to a B/S application through the
gateway, driven over the DevTools protocol on a pipe (stdlib only).

Copied to the external client and run there by the sso journey's
tests (molecule/stack) and by the demo's journeys (playbooks/journeys.yml):

    browser_sign_in.py URL USER SCREENSHOT [--hold-artifact]

The user's password comes on standard input. The browser opens URL, is
sent to the IdP's sign-in page, fills it in and lands back on the
application; prints one JSON object: every URL the page went through, the
user the final page names, its text. With --hold-artifact the browser
stops at the application's ACS and the object carries the URL it was sent
to (the artifact unspent), for the refusal tests.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

DEADLINE_S = 60
CHROMIUM = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--window-size=1100,700", "--no-first-run", "--disable-extensions"]
FILL = """(() => {
  const form = document.querySelector('form[action="/saml2/login"]');
  if (!form) return false;
  form.querySelector('[name=username]').value = %s;
  form.querySelector('[name=password]').value = %s;
  form.querySelector('button[value=password]').click();
  return true;
})()"""


class Browser:
    def __init__(self, profile: str) -> None:
        to_browser, self.commands = os.pipe()
        self.answers, from_browser = os.pipe()

        def on_fds_3_and_4() -> None:
            # Chromium reads commands on fd 3 and writes answers on fd 4.
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen([*CHROMIUM, f"--user-data-dir={profile}", "about:blank"],
                                        preexec_fn=on_fds_3_and_4, pass_fds=(3, 4),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def event(self, method: str, deadline: float) -> dict[str, Any]:
        """The next event `method` (kept or read), within the deadline."""
        while time.monotonic() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)["params"]
            self.events.append(self._read())
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_for(browser: Browser, expression: str, deadline: float) -> Any:
    """The expression's first true value in the page; a page being replaced
    by the next one answers with an error, and is asked again."""
    while time.monotonic() < deadline:
        try:
            value = browser.evaluate(expression)
        except RuntimeError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(expression)


def sign_in(url: str, user: str, password: str, screenshot: str, hold_artifact: bool) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(profile)
        try:
            page = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            browser.session = browser.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            browser.send("Page.enable")
            if hold_artifact:
                browser.send("Fetch.enable", patterns=[{"urlPattern": "*/saml2/acs*"}])
            browser.send("Page.navigate", url=url)
            wait_for(browser, "location.pathname === '/saml2/sso' && document.readyState === 'complete'", deadline)
            if not browser.evaluate(FILL % (json.dumps(user), json.dumps(password))):
                raise RuntimeError("no sign-in form on the IdP's page")
            if hold_artifact:
                paused = browser.event("Fetch.requestPaused", deadline)
                browser.send("Fetch.failRequest", requestId=paused["requestId"], errorReason="Aborted")
                outcome: dict[str, Any] = {"acs": paused["request"]["url"]}
            else:
                named = wait_for(browser, "document.getElementById('user') && document.getElementById('user').textContent",
                                 deadline)
                shot = browser.send("Page.captureScreenshot", format="png")["data"]
                with open(screenshot, "wb") as f:
                    f.write(base64.b64decode(shot))
                outcome = {"user": named, "url": browser.evaluate("location.href"),
                           "text": browser.evaluate("document.body.innerText")}
            outcome["visited"] = [e["params"]["frame"]["url"] for e in browser.events
                                  if e.get("method") == "Page.frameNavigated" and "parentId" not in e["params"]["frame"]]
            return outcome
        finally:
            browser.close()


if __name__ == "__main__":
    target, name, picture = sys.argv[1:4]
    print(json.dumps(sign_in(target, name, sys.stdin.readline().strip(), picture, "--hold-artifact" in sys.argv[4:])))
