"""How the pods of an operator-free run (the chart's Indexed Job) end together.

Pod 0 runs the Ray head and the trainer driver; pods 1..N-1 are Ray workers. A Ray worker
has no way to tell "the run finished" from "the head crashed": both look like a lost head.
So after a successful run the head *announces* it: it answers "done" on a TCP port for a
while (`announce`). A worker (`worker`) polls that port and the head's Ray port:

- "done" answered: stop Ray, exit 0 (the Job's index completes);
- the Ray port unreachable for `lost_after` seconds without "done": exit 75, interrupted but
  resumable; the Job replaces the pod, which joins the next head;
- the head never reachable within `wait` seconds: exit 1 (counts against backoffLimit).

Used from the chart's `files/entrypoint.sh` as `python -m launcher.k8s.rendezvous`; standard
library only, so it starts fast in the pod.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

logger = logging.getLogger(__name__)

DONE = b"done\n"
EXIT_FINISHED = 0
EXIT_NO_HEAD = 1
EXIT_RESUMABLE = 75


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to host:port opens (DNS failures count as no)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def announced(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the head at host:port answers that the run is done."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            data = b""
            while len(data) < len(DONE):
                chunk = conn.recv(len(DONE) - len(data))
                if not chunk:
                    break
                data += chunk
            return data == DONE
    except OSError:
        return False


def announce(port: int, *, expect: int, seconds: float, host: str = "") -> int:
    """Answer "done" to `expect` connections, or to all that come within `seconds`."""
    deadline = time.monotonic() + seconds
    served = 0
    with socket.create_server((host, port)) as server:
        server.settimeout(0.5)
        while served < expect and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(DONE)
                except OSError:
                    continue
            served += 1
    logger.info("announced the end of the run to %d of %d worker(s)", served, expect)
    return 0


def worker(
    head: str,
    *,
    ray_port: int,
    done_port: int,
    wait: float,
    ray_args: Sequence[str] = (),
    ray: Sequence[str] = ("ray",),
    poll: float = 2.0,
    lost_after: float = 60.0,
    stop: threading.Event | None = None,
) -> int:
    """Join the head as a Ray worker and return the exit code the pod should have."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + wait
    if not reachable(head, ray_port):
        logger.info(
            "waiting up to %gs (until %s) for the Ray head %s:%d",
            wait,
            time.strftime("%H:%M:%S", time.localtime(time.time() + wait)),
            head,
            ray_port,
        )
    while not reachable(head, ray_port):
        if time.monotonic() >= deadline or stop.wait(poll):
            logger.error("the Ray head %s:%d did not come up within %gs", head, ray_port, wait)
            return EXIT_NO_HEAD
    rc = subprocess.call([*ray, "start", f"--address={head}:{ray_port}", *ray_args])
    if rc != 0:
        logger.error("`ray start` failed with exit code %d", rc)
        return EXIT_RESUMABLE
    lost_since: float | None = None
    while True:
        if announced(head, done_port):
            subprocess.call([*ray, "stop"])
            return EXIT_FINISHED
        if stop.is_set():
            subprocess.call([*ray, "stop", "--force"])
            return EXIT_RESUMABLE
        now = time.monotonic()
        if reachable(head, ray_port):
            lost_since = None
        elif lost_since is None:
            lost_since = now
        elif now - lost_since >= lost_after:
            logger.error("the Ray head went away without announcing the end of the run")
            subprocess.call([*ray, "stop", "--force"])
            return EXIT_RESUMABLE
        stop.wait(poll)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.k8s.rendezvous")
    sub = parser.add_subparsers(dest="role", required=True)
    a = sub.add_parser("announce", help="head: tell the workers the run finished")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--expect", type=int, required=True, help="number of workers")
    a.add_argument("--seconds", type=float, default=120.0)
    w = sub.add_parser("worker", help="worker: join the head, exit when the run ends")
    w.add_argument("--head", required=True)
    w.add_argument("--ray-port", type=int, required=True)
    w.add_argument("--done-port", type=int, required=True)
    w.add_argument("--wait", type=float, required=True, help="seconds to wait for the head")
    w.add_argument("ray_args", nargs="*", help="extra `ray start` arguments (after --)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[rendezvous] %(message)s")
    if args.role == "announce":
        return announce(args.port, expect=args.expect, seconds=args.seconds)
    stop = threading.Event()

    def _on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_term)
    return worker(
        args.head,
        ray_port=args.ray_port,
        done_port=args.done_port,
        wait=args.wait,
        ray_args=args.ray_args,
        stop=stop,
    )


if __name__ == "__main__":
    sys.exit(main())
