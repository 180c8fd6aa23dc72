"""``modelrollout dashboard`` in a real headless browser (Debian's Chromium driven by selenium) against the real
operator, the local control plane and real Prometheus. One browser for the module; the screenshots of both pages
land in docs/img (README and docs/dashboard.md show them)."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devenv.localenv.controlplane import client_kubeconfig
from devenv.localenv.procs import ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus

from ..conftest import _unavailable
from .exporters import exporters
from .kube import Kubectl
from .manifests import rollout, service
from .test_plugin import annotations, history, plugin_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
WINDOW = (1280, 1000)
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
GATED = [{"setWeight": 25}, {"approval": {"reason": "check dashboards"}}, {"setWeight": 100}]
# Nothing but 127.0.0.1: no background networking, updates, sync, metrics, safe browsing or DNS.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
    f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--force-device-scale-factor=1",
    "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps", "--disable-sync",
    "--disable-extensions", "--disable-breakpad", "--disable-domain-reliability", "--metrics-recording-only",
    "--disable-client-side-phishing-detection", "--safebrowsing-disable-auto-update", "--no-pings",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,NetworkTimeServiceQuerying",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=direct://",
]
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (started once: it is the slow part)."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        _unavailable("Debian's chromium and chromium-driver are not installed (hack/bootstrap.sh installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.utils import is_url_connectable
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")

    class Loopback(Service):
        """chromedriver reached at 127.0.0.1, not at ``localhost`` (selenium's default: a name to resolve)."""

        @property
        def service_url(self) -> str:
            return f"http://127.0.0.1:{self.port}"

        def is_connectable(self) -> bool:
            return bool(is_url_connectable(self.port, host="127.0.0.1"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Loopback(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the viewport, hence the screenshots: fixed
                           {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def dashboard(kubeconfig: Path, log: Path, *args: str) -> Iterator[str]:
    """``modelrollout dashboard ARGS`` as a child process; the URL it prints (with its key) once it serves."""
    proc = ManagedProcess("dashboard", [sys.executable, "-m", "modelrollout", "dashboard", *args,
                                        "--kubeconfig", str(kubeconfig)], log, env=plugin_env()).start()

    def url() -> str | None:
        proc.check_alive()
        found = re.search(r"on (http://127\.0\.0\.1:\d+/\?key=\S+) ", log.read_text(errors="replace"))
        return found.group(1) if found else None

    try:
        yield wait_until(url, 30, 0.1, what="the dashboard's URL")
    finally:
        proc.stop()
        print(f"--- dashboard log tail ({log})\n{proc.log_tail(40)}")


def until(driver: Any, check: Callable[[Any], T | None], timeout: float, what: str) -> T:
    """Poll ``check(driver)`` (re-reading the page) until it returns something truthy, at most ``timeout`` s."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        out: T = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; page text:\n"
                             f"{driver.find_element('tag name', 'body').text[:3000]}") from None
    return out


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def read(driver: Any, get: Callable[[Any], T], what: str, timeout: float = 10) -> T:
    """``get(driver)`` once it gets through: the page re-renders at every change of the rollout (every analysis
    tick here), so an element found a moment ago may be gone; find and read (or click) again until it works."""
    return until(driver, lambda d: (get(d),), timeout, what)[0]


def text(driver: Any, selector: str) -> str:
    return read(driver, lambda d: str(css(d, selector).text), selector)


def attr(driver: Any, selector: str, name: str) -> str:
    return read(driver, lambda d: str(css(d, selector).get_attribute(name)), f"{selector}[{name}]")


def click(driver: Any, selector: str) -> None:
    read(driver, lambda d: css(d, selector).click(), f"a click on {selector}")


def row_cell(driver: Any, key: str, cell: str) -> str:
    return str(css(driver, f'tr.rollout[data-key="{key}"] td.{cell}').text)


def screenshot(driver: Any, name: str, where: Path) -> Path:
    """The page as a PNG in ``where``: docs/img with MODELROLLOUT_SCREENSHOTS=docs, else the test's tmp dir (a
    test run leaves the tree as it was)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == WINDOW, f"{name} is {width}x{height}"
    return path


def test_overview_follows_a_rollout_and_its_page_charts_the_metric_approves_and_rolls_back(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, browser: Any, tmp_path: Path) -> None:
    steps = [{"setWeight": 25}, {"analysis": {"passes": 2}}, {"approval": {"reason": "check the compat score"}},
             {"setWeight": 100}]
    spec = {"analysis": {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                         "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99}]}}
    key = f"{k.ns}/chat"
    with exporters(prometheus, tmp_path, "chat"), \
            dashboard(k.cp.kubeconfig, tmp_path / "dashboard.log", "-n", k.ns) as url:
        k.apply(service("chat"))
        k.apply(rollout("chat", steps=steps, **spec))
        first = k.wait_phase("chat", "Succeeded", 90)["stableRevision"]

        browser.get(url)
        until(browser, lambda d: row_cell(d, key, "phase-cell") == "Succeeded", 30, "chat listed as Succeeded")
        assert row_cell(browser, key, "weight") == "0%"
        browser.execute_script("window.notReloaded = true")

        k.apply(rollout("chat", image="model:2", steps=steps, **spec))
        until(browser, lambda d: row_cell(d, key, "weight") == "25%", 90, "the overview to show weight 25%")
        st = k.wait_phase("chat", "AwaitingApproval", 90)
        token = st["approval"]["token"]
        until(browser, lambda d: row_cell(d, key, "phase-cell") == "AwaitingApproval", 30, "AwaitingApproval")
        assert "approval at step 3: check the compat score" in row_cell(browser, key, "waiting")
        assert row_cell(browser, key, "step") == "3/4"
        assert browser.execute_script("return window.notReloaded") is True, "updated live, not reloaded"
        shots = IMG if os.environ.get("MODELROLLOUT_SCREENSHOTS") == "docs" else tmp_path / "img"
        screenshot(browser, "dashboard-overview.png", shots)

        click(browser, f'tr.rollout[data-key="{key}"] td.name a')
        until(browser, lambda d: css(d, "#approve-token").text == token, 30, "the gate's token")
        chart = "svg#metric-api-compatibility"
        until(browser, lambda d: css(d, f"{chart} line.threshold-min"), 30, "the min threshold line")
        assert attr(browser, f"{chart} line.threshold-min", "data-value") == "0.99"
        until(browser, lambda d: len(d.find_elements("css selector", f"{chart} circle.evaluation.Pass")) >= 1, 30,
              "passing evaluations on the chart")
        legend = text(browser, '.metric[data-metric="api-compatibility"] .legend')
        assert "Prometheus range query" in legend and "last: 1 Pass" in legend
        until(browser, lambda d: len(css(d, f"{chart} polyline.line").get_attribute("points").split()) >= 8, 30,
              "the metric's values over time (a point a second from Prometheus)")
        weights = attr(browser, "svg#weight-chart polyline.line", "points").split()
        assert len(weights) >= 3, weights
        assert attr(browser, "ol.steps li.current", "data-index") == "2"
        assert "gate: check the compat score" in text(browser, "ol.steps li.current")
        done = read(browser, lambda d: [li.get_attribute("data-index")
                                        for li in d.find_elements("css selector", "ol.steps li.done")], "done steps")
        assert done == ["0", "1"]
        screenshot(browser, "dashboard-rollout.png", shots)

        click(browser, "#approve")
        result = until(browser, lambda d: css(d, "#action-result.ok").text, 30, "the approval's answer")
        assert result == f"approved chat at step 3/4 with {token}"
        st = k.wait(name="chat", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
                    timeout=90, what="chat promoted")
        approved = history(st, "Approved")
        assert approved and approved[-1]["token"] == token and approved[-1].get("by") == "modelrollout-dashboard"
        until(browser, lambda d: css(d, "#phase").text == "Succeeded", 30, "the page to follow the promotion")
        assert "modelrollout-dashboard" in text(browser, "#history")

        assert attr(browser, "#rollback-revision", "value") == first, "the previous successful revision"
        click(browser, "#action-rollback-to")
        confirm = until(browser, lambda d: css(d, "#confirm").text, 10, "the confirmation")
        assert f"modelrollout.io/rollback-to={first}" in confirm
        click(browser, "#confirm-yes")
        result = until(browser, lambda d: css(d, '#action-result.ok[data-verb="rollback-to"]').text, 30, "rolled back")
        assert result.startswith(f"rolling chat back to revision {first}")
        k.wait(name="chat", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] == first,
               timeout=90, what="the first revision back")


def _request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: dict[str, Any] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=None if body is None else json.dumps(body).encode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":
                out.append(address)
    return out


VIEWER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rollout-viewer}
rules:
- {apiGroups: [modelrollout.io], resources: [modelrollouts], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rollout-viewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rollout-viewer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: dashboard-viewer}]
"""


def test_a_viewer_sees_the_apiservers_refusal_and_the_server_takes_no_foreign_requests(
        k: Kubectl, operator: ManagedProcess, browser: Any, tmp_path: Path) -> None:
    k.apply(service("locked"))
    k.apply(rollout("locked", steps=GATED))
    k.wait_phase("locked", "Succeeded", 90)
    k.apply(rollout("locked", image="model:2", steps=GATED))
    token = k.wait_phase("locked", "AwaitingApproval", 90)["approval"]["token"]
    k.apply(VIEWER_RBAC)
    viewer = client_kubeconfig(k.cp, "dashboard-viewer", tmp_path / "viewer.kubeconfig", group="dashboard-viewers")

    with dashboard(viewer, tmp_path / "all.log", "--all-namespaces") as url:
        browser.get(url)
        refused = until(browser, lambda d: css(d, "#overview-error").text, 30, "the refused list")
        assert "cannot list ModelRollouts in all namespaces: 403" in refused
        assert 'User "dashboard-viewer" cannot list resource "modelrollouts"' in refused

    with dashboard(viewer, tmp_path / "dashboard.log", "-n", k.ns) as url:
        base, key = url.split("?key=")
        port = int(base.rsplit(":", 1)[1].strip("/"))
        assert _listening(port) == ["0100007F"], "bound to 127.0.0.1 only"
        assert _request(base)[0] == 401, "nothing without the key of the printed URL"
        session = {"Cookie": f"modelrollout-dashboard-{port}={key}"}
        status, page = _request(base, headers=session)
        page_token = re.search(r'name="modelrollout-token" content="([^"]+)"', page)
        assert status == 200 and page_token is not None
        action = f"{base}api/rollouts/{k.ns}/locked/abort"
        assert _request(base, headers={**session, "Host": f"rebound.example:{port}"})[0] == 421, "DNS rebinding"
        status, said = _request(action, method="POST", body={}, headers=session)
        assert status == 403 and "X-ModelRollout-Token" in said, "a POST without the page's token"
        status, said = _request(action, method="POST", body={}, headers={
            **session, "X-ModelRollout-Token": page_token.group(1), "Origin": "http://attacker.example"})
        assert status == 403 and "cross-origin" in said
        status, said = _request(f"{base}api/rollouts/{k.ns}/locked/approve", method="POST", body={"token": "0000-9"},
                                headers={**session, "X-ModelRollout-Token": page_token.group(1),
                                         "Content-Type": "application/json"})
        assert status == 409 and f"now: {token}" in said, "an approval for another gate writes nothing"

        browser.get(url)
        browser.get(f"{base}#/{k.ns}/locked")
        until(browser, lambda d: css(d, "#approve-token").text == token, 30, "the gate's token")
        click(browser, "#action-abort")
        confirm = until(browser, lambda d: css(d, "#confirm").text, 10, "the confirmation")
        assert "modelrollout.io/abort=true" in confirm and "back to stable" in confirm
        click(browser, "#confirm-yes")
        refused = until(browser, lambda d: css(d, "#action-result.error").text, 30, "the refusal")
        assert "403 Forbidden" in refused and 'User "dashboard-viewer" cannot patch resource "modelrollouts"' in refused

        click(browser, "#approve")
        refused = until(browser, lambda d: css(d, '#action-result.error[data-verb="approve"]').text, 30,
                        "the approval refused")
        assert "locked: the apiserver said 403 Forbidden" in refused and "cannot patch" in refused
    assert not {"modelrollout.io/abort", "modelrollout.io/approve"} & set(annotations(k, "locked"))
    assert k.status("locked")["phase"] == "AwaitingApproval"
