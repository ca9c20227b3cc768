"""A loopback HTTP server that answers the Kubernetes API paths vlaunch's client uses.

THIS IS NOT A CLUSTER. No kind, minikube or Docker can run here, so the tests point the real
`kubernetes` Python client at this server instead: it stores objects in memory and speaks
the API's wire format (JSON objects and lists, `labelSelector`, `watch=true` event streams,
pod logs with `follow=true`, `deletecollection`, 404/409 Status bodies). Nothing is
scheduled and no controller runs: a test plays kubelet and Job controller by changing
objects and appending log lines with `put`/`patch_status`/`append_log`.

Every blocking wait is bounded (`MAX_WAIT` seconds) and `stop()` releases all of them.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

MAX_WAIT = 20.0
NO_RESOURCE = "the server could not find the requested resource"
CORE = {"secrets", "configmaps", "services", "persistentvolumeclaims", "pods"}
PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)"
    r"(?:/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>log))?)?)?$"
)
PLURAL = {
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
    "Job": "jobs",
    "RayJob": "rayjobs",
}


def _pop(obj: dict[str, Any], dotted: str) -> bool:
    """Remove the field at the dotted path from `obj`; whether it was there."""
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj.get(key)  # type: ignore[assignment]
        if not isinstance(obj, dict):
            return False
    return obj.pop(last, None) is not None


def matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors (`a=b,c=d`), what vlaunch sends."""
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubeAPI:
    """In-memory objects behind a loopback HTTP server (see the module docstring)."""

    def __init__(
        self,
        namespaces: tuple[str, ...] = ("default",),
        kuberay: bool = False,
        reject: tuple[str, ...] = (),
        undeclared: tuple[str, ...] = (),
    ):
        self.namespaces = set(namespaces)
        self.kuberay = kuberay
        self.reject = set(reject)  # plurals whose creation fails with 422 Invalid
        # Dotted RayJob fields the installed CRD does not declare (an older KubeRay). Like the
        # API server: refused (400) under fieldValidation=Strict, else silently pruned.
        self.undeclared = undeclared
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.logs: dict[tuple[str, str], list[bytes]] = {}
        self.closed_logs: set[tuple[str, str]] = set()
        self._log_opened: dict[tuple[str, str], threading.Event] = {}
        self.requests: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self.stopping = False
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=MAX_WAIT)

    # ------------------------------------------------------------------ state (the test's side)

    def _record(self, event_type: str, plural: str, obj: dict[str, Any]) -> None:
        """Bump the resource version and log a watch event (caller holds `cond`)."""
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.events.append(
            (rv, event_type, plural, obj["metadata"]["namespace"], copy.deepcopy(obj))
        )
        self.cond.notify_all()

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (as a controller would), emitting a watch event."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        plural = PLURAL[obj["kind"]]
        key = (plural, meta["namespace"], meta["name"])
        with self.cond:
            old = self.objects.get(key)
            meta.setdefault("uid", old["metadata"]["uid"] if old else f"uid-{next(self._uid)}")
            meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{next(self._uid):02d}Z")
            self.objects[key] = obj
            self._record("MODIFIED" if old else "ADDED", plural, obj)
        return obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            return copy.deepcopy(self.objects.get((PLURAL[kind], namespace, name)))

    def patch_status(self, kind: str, namespace: str, name: str, **status: Any) -> None:
        obj = self.get(kind, namespace, name)
        assert obj is not None, (kind, namespace, name)
        obj.setdefault("status", {}).update(status)
        self.put(obj)

    def kinds_present(self, namespace: str) -> set[str]:
        with self.cond:
            return {plural for plural, ns, _ in self.objects if ns == namespace}

    def append_log(self, namespace: str, pod: str, text: str) -> None:
        with self.cond:
            self.logs.setdefault((namespace, pod), []).append(text.encode())
            self.cond.notify_all()

    def log_opened(self, namespace: str, pod: str) -> threading.Event:
        """Set once a client has asked for the pod's log (to order a test's steps)."""
        with self.cond:
            return self._log_opened.setdefault((namespace, pod), threading.Event())

    def close_log(self, namespace: str, pod: str) -> None:
        with self.cond:
            self.closed_logs.add((namespace, pod))
            self.cond.notify_all()

    # ------------------------------------------------------------------ HTTP (the client's side)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                api._serve(self, "GET")

            def do_POST(self) -> None:
                api._serve(self, "POST")

            def do_DELETE(self) -> None:
                api._serve(self, "DELETE")

        return Handler

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _status(self, h: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        self._send(
            h,
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": reason,
                "message": message,
                "code": code,
            },
        )

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append((method, url.path))
        m = PATH.match(url.path)
        if m is None:
            return self._status(h, 404, "NotFound", NO_RESOURCE)
        ns, plural, name, sub = m["ns"], m["plural"], m["name"], m["sub"]
        group = m["group"]
        served = (
            (group is None and plural in CORE)
            or (group == "batch" and plural == "jobs")
            or (group == "ray.io" and plural == "rayjobs" and self.kuberay)
        )
        if plural is None and group is None and method == "GET":
            if ns in self.namespaces:
                return self._send(
                    h, 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}}
                )
            return self._status(h, 404, "NotFound", f'namespaces "{ns}" not found')
        if not served:
            return self._status(h, 404, "NotFound", NO_RESOURCE)
        if sub == "log":
            return self._log(h, ns, name, query)
        if name is None and method == "GET" and query.get("watch") in ("true", "1", "True"):
            return self._watch(h, plural, ns, query)
        with self.cond:
            if name is None and method == "GET":
                items = [
                    copy.deepcopy(o)
                    for (p, n, _), o in sorted(self.objects.items())
                    if p == plural
                    and n == ns
                    and matches(o["metadata"].get("labels") or {}, query.get("labelSelector"))
                ]
                rv = str(self.events[-1][0] if self.events else 0)
                return self._send(
                    h,
                    200,
                    {
                        "kind": "List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": rv},
                        "items": items,
                    },
                )
            if name is None and method == "POST":
                body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
                obj_name = body["metadata"]["name"]
                if plural in self.reject:
                    return self._status(h, 422, "Invalid", f'{plural} "{obj_name}" is invalid')
                if (plural, ns, obj_name) in self.objects:
                    return self._status(
                        h, 409, "AlreadyExists", f'{plural} "{obj_name}" already exists'
                    )
                if plural == "rayjobs":
                    unknown = [f for f in self.undeclared if _pop(body, f)]
                    if unknown and query.get("fieldValidation") == "Strict":
                        fields = ", ".join(f'unknown field "{f}"' for f in unknown)
                        return self._status(
                            h,
                            400,
                            "BadRequest",
                            'RayJob in version "v1" cannot be handled as a RayJob: '
                            f"strict decoding error: {fields}",
                        )
                body["metadata"]["namespace"] = ns
                body["metadata"]["uid"] = f"uid-{next(self._uid)}"
                body["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{next(self._uid):02d}Z"
                self.objects[(plural, ns, obj_name)] = body
                self._record("ADDED", plural, body)
                return self._send(h, 201, body)
            if name is None and method == "DELETE":
                doomed = [
                    k
                    for k, o in self.objects.items()
                    if k[0] == plural
                    and k[1] == ns
                    and matches(o["metadata"].get("labels") or {}, query.get("labelSelector"))
                ]
                for key in doomed:
                    self._record("DELETED", plural, self.objects.pop(key))
                return self._send(
                    h, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                )
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                return self._status(h, 404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET":
                return self._send(h, 200, copy.deepcopy(obj))
            if method == "DELETE":
                self._record("DELETED", plural, self.objects.pop((plural, ns, name)))
                return self._send(
                    h, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                )
        return self._status(h, 405, "MethodNotAllowed", method)

    def _stream_start(self, h: BaseHTTPRequestHandler, content_type: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Connection", "close")
        h.end_headers()

    def _watch(
        self, h: BaseHTTPRequestHandler, plural: str, ns: str, query: dict[str, str]
    ) -> None:
        """Events after `resourceVersion` until `timeoutSeconds` (bounded by MAX_WAIT)."""
        after = int(query.get("resourceVersion") or 0)
        timeout = min(float(query.get("timeoutSeconds") or MAX_WAIT), MAX_WAIT)
        self._stream_start(h, "application/json")
        deadline = threading.Event()

        def expire() -> None:
            deadline.set()
            self._wake()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            while True:
                with self.cond:
                    pending = [
                        e
                        for e in self.events
                        if e[0] > after
                        and e[2] == plural
                        and e[3] == ns
                        and matches(
                            e[4]["metadata"].get("labels") or {}, query.get("labelSelector")
                        )
                    ]
                    if not pending:
                        if deadline.is_set() or self.stopping:
                            return
                        self.cond.wait(MAX_WAIT)
                        continue
                for rv, event_type, _, _, obj in pending:
                    h.wfile.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
                    after = rv
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            timer.cancel()

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _log(self, h: BaseHTTPRequestHandler, ns: str, pod: str, query: dict[str, str]) -> None:
        """The pod's log; with follow=true, new lines as they come until the log is closed."""
        if (ns, pod) not in self.logs and ("pods", ns, pod) not in self.objects:
            return self._status(h, 404, "NotFound", f'pods "{pod}" not found')
        follow = query.get("follow") in ("true", "1", "True")
        self._stream_start(h, "text/plain")
        self.log_opened(ns, pod).set()
        sent = 0
        try:
            while True:
                with self.cond:
                    chunks = self.logs.get((ns, pod), [])[sent:]
                    done = (ns, pod) in self.closed_logs or not follow or self.stopping
                    if not chunks and not done:
                        if not self.cond.wait(MAX_WAIT):
                            return
                        continue
                for chunk in chunks:
                    h.wfile.write(chunk)
                sent += len(chunks)
                h.wfile.flush()
                if done and not chunks:
                    return
        except (BrokenPipeError, ConnectionResetError):
            return
