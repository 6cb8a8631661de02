"""A one-node SLURM cluster on 127.0.0.1 for the tests, without systemd (issue 8's verified facts).

munged runs as user munge, ``slurmctld -c -i`` and ``slurmd -c -N localhost`` as root, with a
slurm.conf and gres.conf written to /etc/slurm (Snakemake's SLURM plugin drops every ``SLURM_*``
variable, ``SLURM_CONF`` too, from the jobs it submits, so ``srun`` inside a job finds only the
default location) and removed again by ``stop()``; a slurm.conf that is not ours is left alone
and the tests skip. The node has the machine's CPUs, most of its memory and one
stand-in GPU (``/dev/null``), so that jobs asking for ``--gpus=1`` are scheduled and the code
falls back to the CPU. ``stop()`` ends exactly the daemons ``start()`` started, by PID.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "squeue", "scancel", "scontrol", "srun")
STATE = Path("/var/spool/slurmctld")  # Debian's default, /var/spool, makes slurmctld exit at once
SPOOL = Path("/var/spool/slurmd")
LOGS = Path("/var/log/slurm")
MUNGE_RUN = Path("/run/munge")
ETC = Path("/etc/slurm")
MARK = "# written by tests/slurm_cluster.py"


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def unavailable_reason() -> str | None:
    """Why a cluster cannot be stood up here, or None when it can."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        return (
            f"SLURM is not installed (missing {', '.join(missing)}): `make test-deps` installs Debian's "
            "slurm-wlm and munge when run as root with apt-get"
        )
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged (as user munge) needs root"
    conf = ETC / "slurm.conf"
    if conf.exists() and not conf.read_text(errors="replace").startswith(MARK):
        return f"{conf} exists and was not written by the tests; not replacing this machine's SLURM set-up"
    for port in (6817, 6818):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"port {port} is taken (another SLURM daemon runs here); not touching it"
    return None


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo: no MemTotal line")


class SlurmCluster:
    """Start with ``start()``, stop with ``stop()``; ``env`` is the environment clients need."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = ETC / "slurm.conf"
        self.pid_files = {
            "munged": self.root / "munged.pid",
            "slurmctld": self.root / "slurmctld.pid",
            "slurmd": self.root / "slurmd.pid",
        }
        self.started: dict[str, int] = {}
        self.cpus = len(os.sched_getaffinity(0))
        self.memory_mb = max(1024, _memory_mb() - 1024)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), *SBIN])

    # configuration ---------------------------------------------------------------------------
    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ETC.mkdir(parents=True, exist_ok=True)
        lines = [
            MARK,
            "ClusterName=astroclip-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            "SlurmUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={STATE}",
            f"SlurmdSpoolDir={SPOOL}",
            f"SlurmctldLogFile={LOGS / 'slurmctld.log'}",
            f"SlurmdLogFile={LOGS / 'slurmd.log'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}",
            f"SlurmdPidFile={self.pid_files['slurmd']}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "GresTypes=gpu",
            "MinJobAge=600",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "KillWait=10",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:1 "
            "State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # the stand-in GPU: a device file every job can open, so gres/gpu is schedulable
        (ETC / "gres.conf").write_text(f"{MARK}\nName=gpu File=/dev/null\n")

    # daemons ---------------------------------------------------------------------------------
    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60, **kwargs)

    def _munge_works(self) -> bool:
        if _which("munge") is None or _which("unmunge") is None:
            return False
        encoded = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
        if encoded.returncode != 0:
            return False
        return (
            subprocess.run([_which("unmunge")], input=encoded.stdout, capture_output=True, timeout=10).returncode == 0
        )

    def _start_munged(self) -> None:
        if self._munge_works():
            return  # a munged already runs (not ours: left alone at stop)
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            result = self._run(_which("mungekey") or "mungekey", "--create", "--keyfile", str(key))
            if result.returncode != 0:
                raise RuntimeError(f"mungekey --create failed: {result.stderr}")
            shutil.chown(key, "munge", "munge")
        self.pid_files["munged"].unlink(missing_ok=True)
        pid_file = MUNGE_RUN / "munged.pid"  # munged checks its pid file's directory, owned by munge
        result = self._run(_which("munged"), f"--pid-file={pid_file}", user="munge", group="munge")
        if result.returncode != 0:
            raise RuntimeError(f"munged (as user munge) failed to start: {result.stderr.strip()}")
        self.started["munged"] = self._read_pid(pid_file, "munged")
        deadline = time.monotonic() + 10
        while not self._munge_works():
            if time.monotonic() > deadline:
                raise RuntimeError("munged started but `munge -n | unmunge` fails")
            time.sleep(0.2)

    def _read_pid(self, pid_file: Path, name: str) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                return int(pid_file.read_text().split()[0])
            time.sleep(0.2)
        raise RuntimeError(f"{name} wrote no pid file {pid_file}; its log:\n{self.log_tail(name)}")

    def _start_daemon(self, name: str, *args: str) -> None:
        self.pid_files[name].unlink(missing_ok=True)
        result = self._run(_which(name), *args)
        if result.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed: {result.stderr.strip()}\n{self.log_tail(name)}")
        self.started[name] = self._read_pid(self.pid_files[name], name)

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        for directory in (STATE, SPOOL, LOGS):
            directory.mkdir(parents=True, exist_ok=True)
        for log in ("slurmctld.log", "slurmd.log"):
            (LOGS / log).unlink(missing_ok=True)
        self._start_munged()
        self._start_daemon("slurmctld", "-c", "-i")
        self._start_daemon("slurmd", "-c", "-N", "localhost")
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = self._run("sinfo", "-h", "-N", "-o", "%N %t")
            state = (result.stdout + result.stderr).strip()
            if result.returncode == 0 and state.split() == ["localhost", "idle"]:
                return
            for name in ("slurmctld", "slurmd"):
                if name in self.started and not _alive(self.started[name]):
                    raise RuntimeError(f"{name} (pid {self.started[name]}) exited; its log:\n{self.log_tail(name)}")
            time.sleep(0.5)
        raise RuntimeError(
            f"node not idle after {timeout:.0f} s (sinfo: {state!r});\n"
            f"slurmctld log:\n{self.log_tail('slurmctld')}\nslurmd log:\n{self.log_tail('slurmd')}"
        )

    def stop(self) -> None:
        """End the jobs left on this cluster, then the daemons started here, by PID."""
        if "slurmctld" in self.started and _alive(self.started["slurmctld"]):
            self._run("scancel", "--partition=debug")
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.started.pop(name, None)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for name in ("slurm.conf", "gres.conf"):
            path = ETC / name
            if path.exists() and path.read_text(errors="replace").startswith(MARK):
                path.unlink()

    def log_tail(self, name: str, n: int = 40) -> str:
        path = LOGS / f"{name}.log" if name != "munged" else Path("/var/log/munge/munged.log")
        if not path.exists():
            return f"({path} does not exist)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
