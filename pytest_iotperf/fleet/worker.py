"""A local Locust worker: ``python -m pytest_iotperf.fleet.worker --master-port P``.

Built with ``Environment.create_worker_runner`` in a fresh interpreter (a fork
after the master exists would connect no worker).  ``--master-port -`` reads
the port from the first line of stdin (``{"port": P}``): the runner starts its
workers together with the master, so their imports (about a second each:
locust, gevent, zmq) overlap the master's instead of following them.

A worker serves every run of its master (a standing master runs a session's
runs on the same workers): each run's spec replaces the last run's state
(``worker_fleet.install_worker``); it ends when the master quits it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import locust  # noqa: F401  first: Locust monkey-patches the stdlib with gevent on import
from locust.env import Environment

from pytest_iotperf.fleet.user import DeviceUser
from pytest_iotperf.fleet.worker_fleet import install_worker
from pytest_iotperf.process_guard import die_with_parent, raise_nofile_limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", required=True, help="the master's port, or '-': read it from stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    raise_nofile_limit()
    if args.master_port == "-":
        line = sys.stdin.readline()  # blocks the whole process: nothing else runs yet
        if not line:
            return 1  # the parent gave up before the master listened
        port = int(json.loads(line)["port"])
    else:
        port = int(args.master_port)
    environment = Environment(user_classes=[DeviceUser])
    runner = environment.create_worker_runner(args.master_host, port)
    install_worker(environment)
    runner.greenlet.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
