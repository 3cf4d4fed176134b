"""A private single-node SLURM cluster (munged + slurmctld + slurmd) in a temporary directory, for tests.

Needs the Debian packages slurmctld, slurmd, slurm-client and munge, and root (slurmd runs jobs as their
user). `why_unavailable()` says why it cannot start here; tests skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")


def why_unavailable() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"SLURM/munge not installed (missing {', '.join(missing)}); "
                "apt-get install -y slurmctld slurmd slurm-client munge (as .ci/run does when root)")
    if os.geteuid() != 0:
        return "a private SLURM cluster needs root (slurmd starts jobs as their user)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Start with `start()`, stop with `stop()`; `env` holds SLURM_CONF for clients (sbatch, scontrol, …)."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.env = os.environ | {"SLURM_CONF": str(self.root / "slurm.conf")}
        self.pidfiles = [self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munged.pid"]

    def _conf(self) -> str:
        r = self.root
        sock = r / "munge" / "munge.socket"
        return "\n".join([
            "ClusterName=genshifttest", f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock},cred_expire=10",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            "SchedulerParameters=sched_interval=1,bf_interval=1", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=1000", "JobRequeue=1", "ReturnToService=2",
            "MailProg=/bin/true", "KillWait=30", "MinJobAge=3600",
            f"NodeName={self.host} CPUs={self.cpus} RealMemory=20000 State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"

    def _wait(self, what: str, check, timeout: float = 30.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if check():
                return
            time.sleep(0.2)
        raise RuntimeError(f"SLURM test cluster: {what} did not happen within {timeout} s{self.daemon_logs()}")

    def daemon_logs(self, tail: int = 2000) -> str:
        """The last `tail` characters of each daemon log (munged, slurmctld, slurmd), for failure messages."""
        return "".join(f"\n--- {p.name}\n{p.read_text()[-tail:]}" for p in sorted(self.root.glob("*.log")))

    def _out(self, *cmd: str) -> str:
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return p.stdout if p.returncode == 0 else ""

    def start(self) -> Cluster:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        for d in r.parents:  # munged wants every directory above its socket open to all
            if not os.stat(d).st_mode & 0o001:
                raise RuntimeError(f"SLURM test cluster: {d} is not accessible to all; use a root under /tmp")
        for d in ("munge", "state", "spool"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o755)
        key = r / "munge" / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o600)
        (r / "slurm.conf").write_text(self._conf())
        subprocess.run(["munged", f"--socket={r / 'munge' / 'munge.socket'}", f"--key-file={key}",
                        f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'seed'}"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-f", str(r / "slurm.conf")], check=True, env=self.env, capture_output=True)
        self._wait("slurmctld UP", lambda: "UP" in self._out("scontrol", "ping"))
        subprocess.run(["slurmd", "-f", str(r / "slurm.conf")], check=True, env=self.env, capture_output=True)
        self._wait("node idle", lambda: "idle" in self._out("sinfo", "-h", "-n", self.host, "-o", "%T"))
        return self

    def stop(self) -> None:
        for pf in self.pidfiles:
            if not pf.is_file():
                continue
            try:
                pid = int(pf.read_text().split()[0])
            except (ValueError, IndexError):
                continue
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                end = time.time() + wait
                while time.time() < end and _alive(pid):
                    time.sleep(0.1)
                if not _alive(pid):
                    break

    # --- jobs ---
    def job_states(self, job: str) -> dict[str, str]:
        """{'<job>_<task>' or '<job>': STATE} from scontrol (finished jobs stay listed: MinJobAge=3600)."""
        out = self._out("scontrol", "-o", "show", "job", job)
        states = {}
        for line in out.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            key = f"{f['ArrayJobId']}_{f['ArrayTaskId']}" if f.get("ArrayTaskId") else f.get("JobId", "")
            states[key] = f.get("JobState", "")
        return states

    def wait_jobs(self, job: str, n: int, timeout: float) -> dict[str, str]:
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
        end = time.time() + timeout
        states: dict[str, str] = {}
        while time.time() < end:
            states = self.job_states(job)
            if len(states) >= n and all(s in final for s in states.values()):
                return states
            time.sleep(1.0)
        raise TimeoutError(f"SLURM job {job} not finished after {timeout} s: {states}{self.daemon_logs()}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
