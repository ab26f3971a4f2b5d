"""A local Locust worker: ``python -m pytest_iotperf.fleet.worker --master-port P``.

Built with ``Environment.create_worker_runner`` in a fresh interpreter (a fork
after the master exists would connect no worker).
"""

from __future__ import annotations

import argparse
import logging

import locust  # noqa: F401  first: Locust monkey-patches the stdlib with gevent on import
from locust.env import Environment

from pytest_iotperf.fleet.user import DeviceUser
from pytest_iotperf.fleet.worker_fleet import install_worker
from pytest_iotperf.process_guard import die_with_parent, raise_nofile_limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    die_with_parent()
    raise_nofile_limit()
    environment = Environment(user_classes=[DeviceUser])
    runner = environment.create_worker_runner(args.master_host, args.master_port)
    install_worker(environment)
    runner.greenlet.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
