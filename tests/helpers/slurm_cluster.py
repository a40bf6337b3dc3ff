"""A real one-node SLURM for tests: munged, slurmctld and slurmd started as this user's
subprocesses from a config written into a temp folder (this host as the only node, 2 CPUs, no
cgroups, no accounting), pointed at by SLURM_CONF. Debian's `slurm-wlm` and `munge` provide
them (`.ci/run` installs both); where they cannot start, `start_cluster` says why instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "srun")
START_S = 60.0


@dataclass
class SlurmCluster:
    """The running cluster: its config (SLURM_CONF) and its daemons, stopped by `stop`."""

    root: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM each daemon this cluster started (slurmd first), then wait for it."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        """The last lines of every daemon's log, for a failure's message."""
        texts = []
        for log in sorted((self.root / "log").glob("*")):
            lines = log.read_text(errors="replace").strip().splitlines()[-5:]
            texts.append(f"{log.name}: " + " | ".join(lines))
        return "; ".join(texts)


def start_cluster(root: Path) -> SlurmCluster | str:
    """A started cluster whose node `sinfo` shows idle, or why none can start on this machine."""
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd launches jobs as their user, which takes root"
    cluster = SlurmCluster(root, root / "slurm.conf")
    for folder in ("state", "spool", "log", "munge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = root / "munge" / "munge.socket"
    node = socket.gethostname().split(".")[0]
    cluster.conf.write_text(_config(root, node, socket_path, _free_ports(2)), encoding="utf-8")
    (root / "cgroup.conf").write_text(
        "# no cgroups: proctrack/linuxproc and task/none need none\n", encoding="utf-8"
    )
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    munge = root / "munge"
    commands = [
        [
            "munged",
            "--foreground",
            "--force",
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
            f"--log-file={root / 'log' / 'munged.log'}",
        ],
        ["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
        ["slurmd", "-D", "-f", str(cluster.conf)],
    ]
    for command in commands:
        out = (root / "log" / f"{command[0]}.out").open("w")
        cluster.processes.append(
            subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        )
        time.sleep(0.5)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in cluster.processes):
            break
        state = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True, text=True
        )
        if state.stdout.strip() == "idle":
            return cluster
        time.sleep(0.5)
    cluster.stop()
    return f"the one-node SLURM did not come up within {START_S:.0f}s: {cluster.logs()}"


def _die_with_parent() -> None:
    """SIGTERM this daemon when the test process ends, however it ends (Linux's prctl
    PR_SET_PDEATHSIG), so a killed test run leaves no cluster behind."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _config(root: Path, node: str, munge_socket: Path, ports: list[int]) -> str:
    return f"""\
ClusterName=moectl-test
SlurmctldHost={node}
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
KillWait=10
NodeName={node} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _free_ports(n: int) -> list[int]:
    """`n` TCP ports nothing listens on now (bound to 0, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
