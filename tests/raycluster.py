"""A multi-node Ray cluster on this machine for tests and benchmarks: a head node and worker nodes, each its own
`ray start` with its own temp and cache directories (so no node sees another's cached vectors)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter's ray
# Ray notices a dead node after period x threshold: seconds here, not its default half a minute.
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
               "RAY_health_check_initial_delay_ms": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head node (1 CPU) and worker nodes (1 CPU each), each its own `ray start` with its own directories."""

    def __init__(self, root: Path):
        self.root = root
        self.port, self.client_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workers: list[subprocess.Popen] = []
        self.head = subprocess.Popen([*RAY, "start", "--head", f"--port={self.port}", "--num-cpus=1", "--block",
                                      "--include-dashboard=false", "--disable-usage-stats",
                                      f"--ray-client-server-port={self.client_port}",
                                      f"--temp-dir={root / 'head-tmp'}"], env=self.env("head"),
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def env(self, node: str) -> dict[str, str]:
        # RAY_AUTH_MODE: a token file left in ~/.ray by another cluster would turn token auth on for the head
        # only, and the worker nodes could not join.
        return {**os.environ, **FAST_HEALTH, "ANN_BENCH_CACHE": str(self.root / f"cache-{node}"),
                "RAY_TMPDIR": str(self.root / f"{node}-tmp"), "RAY_AUTH_MODE": "disabled"}

    def add_worker(self, cpus: int = 1) -> subprocess.Popen:
        name = f"worker{len(self.workers)}"
        proc = subprocess.Popen([*RAY, "start", f"--address={self.address}", f"--num-cpus={cpus}", "--block",
                                 "--disable-usage-stats", f"--temp-dir={self.root / (name + '-tmp')}"],
                                env=self.env(name), start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.workers.append(proc)
        return proc

    def alive_nodes(self) -> int:
        code = (f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RAY_TMPDIR": str(self.root / "driver-tmp")})
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else -1

    def wait_for(self, nodes: int, timeout: float = 90) -> None:
        t0 = time.perf_counter()
        while self.alive_nodes() != nodes:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"the cluster did not reach {nodes} alive node(s)")
            time.sleep(1)

    def kill_worker(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)  # the raylet and its workers: the node is gone
        proc.wait()

    def stop(self) -> None:
        """Every process of this cluster, and only those (their command lines name its directory)."""
        for proc in [*self.workers, self.head]:
            if proc.poll() is None:
                self.kill_worker(proc)
        subprocess.run(["pkill", "-9", "-f", str(self.root)], capture_output=True)
