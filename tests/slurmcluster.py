"""A throw-away single-node SLURM cluster on localhost (Debian's slurm-wlm) for tests.

slurmctld and slurmd run in the foreground as children of the test, with a slurm.conf in a temp
folder: one node ``localhost`` with this machine's CPUs, no accounting, no cgroups, and
``auth/none`` so that no munge daemon is needed. Client commands find the cluster through
``SLURM_CONF`` in ``SlurmCluster.env``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "scancel")


class SlurmUnavailable(RuntimeError):
    """The local cluster could not be started; the message says why."""


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    env: dict[str, str]
    daemons: tuple[subprocess.Popen, ...]

    def run(self, *args: str | Path, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster (``env`` adds variables)."""
        return subprocess.run(list(map(str, args)), env=self.env | (env or {}),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted((self.root / "log").glob("*")))


def slurm_conf(root: Path, controller_port: int, node_port: int, cpus: int, user: str) -> str:
    """slurm.conf for one node on localhost with all state, spool, pid and log files in ``root``."""
    return "\n".join([
        "ClusterName=bidsdeidtest",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/none",
        "CredType=cred/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2048 State=UNKNOWN",
        "PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _which(name: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if found is None:
        raise SlurmUnavailable(f"{name} is not installed (apt-get install slurm-wlm)")
    return found


def start_cluster(cpus: int = 2, timeout: float = 30) -> SlurmCluster:
    """Start slurmctld and slurmd and wait until the node is idle; raises SlurmUnavailable."""
    commands = {name: _which(name) for name in DAEMONS + CLIENTS}
    # A short path of its own: slurmd puts unix sockets (at most 107 bytes) in the spool dir.
    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    for folder in ("state", "spool", "log"):
        (root / folder).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, _free_port(), _free_port(), cpus, getpass.getuser()))
    env = os.environ | {"SLURM_CONF": str(conf)}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    daemons = tuple(
        subprocess.Popen([commands[name], "-D", *extra], env=env, start_new_session=True,
                         stdout=(root / "log" / f"{name}.out").open("wb"), stderr=subprocess.STDOUT)
        for name, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", "localhost"])))
    cluster = SlurmCluster(root, env, daemons)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(daemon.poll() is not None for daemon in daemons):
            break
        state = cluster.run(commands["sinfo"], "-h", "-N", "-o", "%T", timeout=10).stdout.strip()
        if state == "idle":
            return cluster
        time.sleep(0.5)
    logs = cluster.logs()
    stop_cluster(cluster)
    raise SlurmUnavailable(f"the node did not become idle within {timeout:.0f} s:\n{logs}")


def stop_cluster(cluster: SlurmCluster) -> None:
    """Cancel what is left of the test's jobs, stop both daemons and delete the temp folder."""
    if all(daemon.poll() is None for daemon in cluster.daemons):
        cluster.run("scancel", f"--user={getpass.getuser()}", timeout=30)
    for daemon in cluster.daemons:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
    for daemon in cluster.daemons:
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    shutil.rmtree(cluster.root, ignore_errors=True)
