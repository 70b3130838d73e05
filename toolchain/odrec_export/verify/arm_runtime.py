"""onnxruntime's aarch64 build, run on this x86-64 host under user-mode emulation (qemu).

``verify`` uses it to show that an artifact gives the same answers on an ARM64 CPU (a phone's
architecture) as on the build machine. The runtime is provisioned on first use into a cache dir
keyed by versions and reused afterwards:

1. a private apt configuration (architecture arm64, its own sources, lists and archives dirs and
   an empty status file; the host's package state and lock are never used) downloads python3.11-minimal,
   libpython3.11-stdlib, libstdc++6 and their dependencies, unpacked with ``dpkg-deb -x`` into a
   sysroot; apt checks every .deb against the archive's signed index;
2. ``qemu-aarch64-static`` is taken out of Debian's amd64 ``qemu-user-static`` .deb;
3. the manylinux aarch64 onnxruntime and numpy wheels (pinned versions and sha256) are installed
   with ``pip install --no-index --no-deps --target``;
4. per CPU model, a prefix of symlinks into the sysroot plus a fake arm64 ``/proc/cpuinfo``:
   bookworm's qemu 7.2 shows the guest the host's x86 cpuinfo, on which onnxruntime crashes at
   import; qemu's ``-L`` prefix makes the guest read the fake one.

The guest cannot start another emulated process, so the host drives it: one guest python per
call of ``ArmRuntime.run``, which takes a batch of (model, inputs) pairs and exchanges arrays
through .npz files. Where provisioning is impossible (no network, no apt) ``ArmUnavailable`` says
why; callers must then report ARM as "not checked", never as passed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OdrecError
from ..files import file_sha256

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
GUEST_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
GUEST_PYTHON = "usr/bin/python3.11"
GUEST_NUMPY = "2.4.6"  # the guest only needs numpy to read and write .npz files
# PyPI files never change, so their sha256 pins them; a new version needs its hash added here.
WHEEL_SHA256 = {
    ("onnxruntime", "1.32.0"): "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
    ("numpy", "2.4.6"): "0ab0a9c4ffb1a6d95ef519fe4247dba8eb6b18ad93999f76b7f657039acabd47",
}
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")


@dataclass(frozen=True)
class CpuModel:
    """What the guest sees: qemu's ``-cpu`` name (HWCAPs, instructions) and a matching cpuinfo."""

    qemu_name: str
    part: int  # ARM's "CPU part" number
    variant: int
    revision: int
    features: str

    def cpuinfo(self) -> str:
        return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {self.features}\n"
                f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {self.variant:#x}\n"
                f"CPU part\t: {self.part:#05x}\nCPU revision\t: {self.revision}\n\n")


_V8_0 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V8_2 = _V8_0.replace(" cpuid", "") + " atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
CPU_MODELS = {
    "cortex-a53": CpuModel("cortex-a53", 0xD03, 0x0, 4, _V8_0),
    "cortex-a72": CpuModel("cortex-a72", 0xD08, 0x0, 3, _V8_0),
    "cortex-a76": CpuModel("cortex-a76", 0xD0B, 0x4, 1, _V8_2),
    "neoverse-n1": CpuModel("neoverse-n1", 0xD0C, 0x3, 1, _V8_2 + " ssbs"),
}
DEFAULT_CPUS = ("cortex-a72", "neoverse-n1")


class ArmUnavailable(OdrecError):
    """The ARM64 runtime cannot be provisioned here (no network, no apt, unknown version)."""


class ArmRunError(OdrecError):
    """The emulated guest process itself failed (not a model error, which is reported per run)."""


def guest_versions() -> tuple[str, str]:
    """(onnxruntime, numpy) versions for the guest: onnxruntime matches this host's."""
    import onnxruntime

    return onnxruntime.__version__, GUEST_NUMPY


def default_cache_dir() -> Path:
    """Per user, keyed by versions, so every checkout (and every CI clone) on a machine shares it."""
    ort, npv = guest_versions()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "odrec-export" / f"arm64-ort-{ort}-{npv}"


# --------------------------------------------------------------------------- running the guest

GUEST_SCRIPT = r'''
import json, platform, sys, time, traceback
import numpy as np
import onnxruntime as ort

job_dir = sys.argv[1]
job = json.load(open(f"{job_dir}/job.json"))
opts = ort.SessionOptions()
opts.intra_op_num_threads = opts.inter_op_num_threads = job["threads"]
sessions, runs = {}, []
for i, run in enumerate(job["runs"]):
    t0 = time.perf_counter()
    try:
        if run["model"] not in sessions:
            sessions[run["model"]] = ort.InferenceSession(run["model"], opts, providers=["CPUExecutionProvider"])
        sess = sessions[run["model"]]
        with np.load(f"{job_dir}/in{i}.npz") as z:
            feeds = {k: z[k] for k in z.files}
        outs = sess.run(None, feeds)
        np.savez(f"{job_dir}/out{i}.npz", **{o.name: v for o, v in zip(sess.get_outputs(), outs)})
        runs.append({"ok": True, "seconds": time.perf_counter() - t0})
    except Exception as e:
        runs.append({"ok": False, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"})
cpu_part = [l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("CPU part")]
json.dump({"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
           "cpu_part": cpu_part[0] if cpu_part else None, "runs": runs}, open(f"{job_dir}/result.json", "w"))
'''


@dataclass
class GuestResult:
    outputs: dict[str, np.ndarray] | None  # None when onnxruntime refused the model or the inputs
    error: str | None
    seconds: float


@dataclass
class GuestRun:
    """Everything one guest process did: one result per (model, inputs) pair, plus what it ran on."""

    cpu: str
    machine: str
    onnxruntime: str
    cpu_part: str | None
    results: list[GuestResult]
    wall_seconds: float


class ArmRuntime:
    """A provisioned cache dir: qemu, the arm64 sysroot, the guest site-packages, CPU prefixes."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.info = json.loads((self.root / "runtime.json").read_text())
        missing = [p for p in (self.qemu, self.root / "sysroot" / GUEST_PYTHON, self.root / "site/onnxruntime")
                   if not p.exists()]
        if missing:
            raise ArmUnavailable(f"{self.root}: incomplete ARM64 runtime ({missing[0].name} missing); "
                                 "remove the dir to re-provision")

    @property
    def qemu(self) -> Path:
        return self.root / "qemu-aarch64-static"

    def prefix(self, cpu: str) -> Path:
        if cpu not in CPU_MODELS:
            raise ArmUnavailable(f"unknown ARM CPU model '{cpu}' (known: {', '.join(CPU_MODELS)})")
        return self.root / "cpus" / cpu

    def run(self, cpu: str, batch: list[tuple[Path, dict[str, np.ndarray]]], threads: int = 1,
            timeout: float = 900) -> GuestRun:
        """Run every (model, inputs) pair of ``batch`` in ONE emulated process on CPU model ``cpu``."""
        prefix = self.prefix(cpu)
        with tempfile.TemporaryDirectory(prefix="odrec-arm-") as tmp:
            job = {"threads": threads, "runs": []}
            for i, (model, feeds) in enumerate(batch):
                np.savez(Path(tmp) / f"in{i}.npz", **feeds)
                job["runs"].append({"model": str(Path(model).resolve())})
            (Path(tmp) / "job.json").write_text(json.dumps(job))
            (Path(tmp) / "guest.py").write_text(GUEST_SCRIPT)
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(self.root / "site"),
                   "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(threads)}
            cmd = [str(self.qemu), "-cpu", CPU_MODELS[cpu].qemu_name, "-L", str(prefix),
                   str(prefix / GUEST_PYTHON), str(Path(tmp) / "guest.py"), tmp]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ArmRunError(f"ARM64 guest on {cpu} did not finish within {timeout:.0f} s") from None
            wall = time.perf_counter() - t0
            result_path = Path(tmp) / "result.json"
            if proc.returncode != 0 or not result_path.is_file():
                tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                raise ArmRunError(f"ARM64 guest on {cpu} failed (exit {proc.returncode}): {tail[:300]}")
            info = json.loads(result_path.read_text())
            results = []
            for i, r in enumerate(info["runs"]):
                if r["ok"]:
                    with np.load(Path(tmp) / f"out{i}.npz") as z:
                        results.append(GuestResult({k: z[k] for k in z.files}, None, r["seconds"]))
                else:
                    results.append(GuestResult(None, r["error"], 0.0))
        return GuestRun(cpu=cpu, machine=info["machine"], onnxruntime=info["onnxruntime"],
                        cpu_part=info["cpu_part"], results=results, wall_seconds=wall)


# --------------------------------------------------------------------------- provisioning


def _run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    except FileNotFoundError:
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: {cmd[0]} not found "
                             "(needs a Debian/Ubuntu host with apt-get and dpkg-deb)") from None
    except subprocess.TimeoutExpired:
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: {what} timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "Err:"))] or lines or ["no output"]
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: {what} failed: {errors[-1].strip()[:300]}")
    return proc.stdout


def _apt_config(work: Path, mirror: str) -> dict:
    """A private apt world under ``work``: arm64 native, amd64 foreign (for qemu-user-static only)."""
    for d in ("etc/parts", "lists/partial", "archives/partial", "state"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "state/status").write_text("")
    (work / "etc/sources.list").write_text(
        f"deb [arch=arm64,amd64 signed-by={DEBIAN_KEYRING}] {mirror} {DEBIAN_SUITE} main\n")
    conf = {
        "APT::Architecture": "arm64",
        "Dir::Etc::SourceList": work / "etc/sources.list",
        "Dir::Etc::SourceParts": work / "etc/parts",
        "Dir::Etc::PreferencesParts": work / "etc/parts",
        "Dir::Etc::Preferences": work / "etc/preferences",
        "Dir::State": work / "state",
        "Dir::State::Lists": work / "lists",
        "Dir::State::status": work / "state/status",
        "Dir::Cache": work / "archives",
        "Dir::Cache::archives": work / "archives",
        "Dir::Log": work / "state",
        "Debug::NoLocking": "true",  # our dirs are private; the host's lock is never taken
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
        "Acquire::Languages": "none",
        "Acquire::Retries": "2",
        "Acquire::http::Timeout": "20",
    }
    lines = [f'{k} "{v}";' for k, v in conf.items()] + ['APT::Architectures { "arm64"; "amd64"; };']
    (work / "etc/apt.conf").write_text("\n".join(lines) + "\n")
    return {**os.environ, "APT_CONFIG": str(work / "etc/apt.conf"), "DEBIAN_FRONTEND": "noninteractive"}


def _deb_fields(deb: Path) -> dict:
    out = _run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], f"reading {deb.name}")
    fields = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return {"package": fields["Package"], "version": fields["Version"], "arch": fields["Architecture"],
            "sha256": file_sha256(deb)}


def _provision_into(work: Path, mirror: str, log) -> dict:
    ort_version, numpy_version = guest_versions()
    for name, version in (("onnxruntime", ort_version), ("numpy", numpy_version)):
        if (name, version) not in WHEEL_SHA256:
            raise ArmUnavailable(f"cannot provision the ARM64 runtime: no pinned sha256 for the aarch64 "
                                 f"{name} {version} wheel (add it to arm_runtime.WHEEL_SHA256)")
    apt = _apt_config(work / "apt", mirror)

    log(f"arm64: apt-get update ({mirror} {DEBIAN_SUITE}, private config)")
    _run(["apt-get", "-q", "update"], f"apt-get update from {mirror} (no network?)", env=apt)
    if not any((work / "apt/lists").glob("*binary-arm64_Packages*")):
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: no arm64 package list could be "
                             f"downloaded from {mirror} (no network?)")

    log(f"arm64: downloading {', '.join(GUEST_PACKAGES)} and their dependencies")
    _run(["apt-get", "-q", "-y", "--no-install-recommends", "install", "--download-only", *GUEST_PACKAGES],
         "apt-get install --download-only", env=apt)
    debs = sorted((work / "apt/archives").glob("*.deb"))
    sysroot = work / "sysroot"
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")
    if not (sysroot / GUEST_PYTHON).is_file():
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: {GUEST_PYTHON} missing after unpacking")

    log("arm64: taking qemu-aarch64-static out of qemu-user-static:amd64")
    qemu_dl = work / "qemu-deb"
    qemu_dl.mkdir()
    _run(["apt-get", "-q", "download", "qemu-user-static:amd64"], "apt-get download qemu-user-static", env=apt,
         cwd=qemu_dl)
    qemu_deb = next(qemu_dl.glob("*.deb"))
    _run(["dpkg-deb", "-x", str(qemu_deb), str(qemu_dl / "x")], "dpkg-deb -x qemu-user-static")
    shutil.copy2(qemu_dl / "x/usr/bin/qemu-aarch64-static", work / "qemu-aarch64-static")

    log(f"arm64: pip download onnxruntime {ort_version} + numpy {numpy_version} (manylinux aarch64)")
    reqs = work / "requirements.txt"
    reqs.write_text(f"onnxruntime=={ort_version} --hash=sha256:{WHEEL_SHA256[('onnxruntime', ort_version)]}\n"
                    f"numpy=={numpy_version} --hash=sha256:{WHEEL_SHA256[('numpy', numpy_version)]}\n")
    target = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(pip + ["download", "--no-deps", "--require-hashes", "-r", str(reqs), "-d", str(work / "wheels"),
                *target, "--abi", "abi3", "--abi", "none", *platforms], "pip download of the aarch64 wheels")
    wheels = sorted((work / "wheels").glob("*.whl"))
    _run(pip + ["install", "--no-index", "--no-deps", "--no-compile", "--target", str(work / "site"),
                *target, *platforms, *map(str, wheels)], "pip install --target of the aarch64 wheels")

    # Bytecode is the same on every 3.11 interpreter: compiling on the host saves the guest ~1 s a run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(sysroot / "usr/lib/python3.11"),
                    str(work / "site")], capture_output=True)

    for name, cpu in CPU_MODELS.items():
        prefix = work / "cpus" / name
        (prefix / "proc").mkdir(parents=True)
        (prefix / "proc/cpuinfo").write_text(cpu.cpuinfo())
        for entry in sysroot.iterdir():
            (prefix / entry.name).symlink_to(Path("../../sysroot") / entry.name)

    info = {
        "onnxruntime": ort_version, "numpy": numpy_version, "debian": f"{mirror} {DEBIAN_SUITE}",
        "qemu": _deb_fields(qemu_deb), "debs": [_deb_fields(d) for d in debs],
        "wheels": [{"file": w.name, "sha256": file_sha256(w)} for w in wheels],
    }
    # The downloads are not needed once unpacked (their names and sha256 stay in runtime.json).
    for d in ("apt", "qemu-deb", "wheels"):
        shutil.rmtree(work / d)
    reqs.unlink()
    return info


def cache_size(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())


def provision(cache_dir: str | Path | None = None, mirror: str = DEBIAN_MIRROR, log=lambda msg: None) -> ArmRuntime:
    """The ARM64 runtime in ``cache_dir``, provisioned first if the dir is not complete yet.

    Concurrent callers serialise on a lock file; the runtime is built in a temp dir and renamed
    into place only when complete, so an interrupted provisioning leaves nothing half-made.
    """
    # Absolute: the private apt configuration is written with these paths, and apt reads relative
    # ones against its own root directory, not ours.
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).resolve()
    if (root / "runtime.json").is_file():
        return ArmRuntime(root)
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise ArmUnavailable(f"cannot provision the ARM64 runtime: needs an x86-64 Linux host "
                             f"(this is {sys.platform}/{os.uname().machine})")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "runtime.json").is_file():  # another process finished it while we waited
            return ArmRuntime(root)
        if root.exists():
            raise ArmUnavailable(f"{root}: exists but holds no runtime.json (remove it to re-provision)")
        work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        work.chmod(0o755)
        try:
            t0 = time.perf_counter()
            info = _provision_into(work, mirror, log)
            info["provision_seconds"] = round(time.perf_counter() - t0, 1)
            info["bytes"] = cache_size(work)
            (work / "runtime.json").write_text(json.dumps(info, indent=1) + "\n")
            os.rename(work, root)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        log(f"arm64: runtime ready in {root} ({info['provision_seconds']} s, {info['bytes'] / 1e6:.0f} MB)")
    return ArmRuntime(root)
