"""A real two-node Ray cluster on this one machine, for the Ray tests.

``ray start --head`` starts the first node and ``ray start --address`` a second one with
its own raylet and a custom resource (``node2``), each with one CPU and a small object
store, so the machine's 2 cores are not oversubscribed. ``ray stop --force`` tears both
down (it also removes any other Ray on the machine: these tests own Ray while they run).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

OBJECT_STORE_BYTES = str(200 * 2**20)
ROOT = Path(__file__).resolve().parents[1]
# Ray (2.5x+) authenticates with a token: one for these tests' cluster and its drivers, so
# that ~/.ray/auth_token (a local ray.init writes one) is neither needed nor touched.
AUTH_TOKEN = secrets.token_hex(32)


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (pip install -e '.[test]' installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    """The environment Ray's nodes, their workers and the drivers run in: this checkout
    first on the import path, the cluster's token, no usage reporting."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=AUTH_TOKEN)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _ray_cli() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def ray_command(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([_ray_cli(), *args], env=ray_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"ray {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@dataclass(frozen=True)
class Cluster:
    address: str  # host:port of the head node's GCS


@contextlib.contextmanager
def two_node_cluster(temp_dir: Path) -> Iterator[Cluster]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--object-store-memory", OBJECT_STORE_BYTES,
              "--disable-usage-stats"]
    try:
        ray_command("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--include-dashboard", "false", "--temp-dir", str(temp_dir),
                    "--ray-client-server-port", str(free_port()), *common)
        ray_command("start", "--address", address, "--node-ip-address", "127.0.0.1",
                    "--resources", '{"node2": 1}', *common)
        yield Cluster(address)
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], env=ray_env(), capture_output=True,
                       timeout=120)
