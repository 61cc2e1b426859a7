"""`python -m minimost check-env`: is this machine ready to run minimost?

One line per dependency (found / version / OK, or what to do), the torch device that will be used,
whether espeak-ng (from the `espeakng-loader` wheel) loads and speaks, and the optional extras.
Exit status 1 when anything required is missing, so scripts and CI can rely on it.
The requirements are read from minimost's own package metadata (pyproject.toml is the source of
truth), so this check never drifts from what `pip install -e .` installs.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata as md
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# distribution name -> import name, where they differ
IMPORT_NAMES = {"espeakng-loader": "espeakng_loader", "safetensors": "safetensors"}
OPTIONAL = {
    "torchcodec": "optional: only for mp3/ogg via HF `datasets` decoding; minimost reads wav/flac with soundfile",
    "transformers": "dev extra: the DeepSeek-V2 peer for equivalence tests (`pip install -e '.[dev]'`)",
    "jiwer": "dev extra: cross-checks minimost's WER (`pip install -e '.[dev]'`)",
    "nbval": "dev extra: runs the notebooks as tests (`pip install -e '.[dev]'`)",
}
FIX = "run `make test` (or `pip install -e '.[dev]'` inside your environment)"


@dataclass
class Requirement:
    name: str
    spec: str  # e.g. "==2.11.0", "" when unpinned


def _marker_applies(marker: str) -> bool:
    """Evaluate the python_version markers used in pyproject.toml (the only kind we use)."""
    if not marker:
        return True
    try:
        from packaging.markers import Marker
        return Marker(marker).evaluate()
    except ImportError:  # packaging comes with datasets; keep a tiny fallback for bare envs
        m = re.fullmatch(r"python_version\s*(>=|<|<=|>|==)\s*'([\d.]+)'", marker.strip())
        if not m:
            return True
        here = tuple(sys.version_info[:2])
        there = tuple(int(x) for x in m.group(2).split("."))
        return {">=": here >= there, "<": here < there, "<=": here <= there,
                ">": here > there, "==": here == there}[m.group(1)]


def _parse(line: str) -> tuple[Requirement, str, str]:
    """'numpy==2.4.6; python_version >= "3.11"' -> (Requirement, marker, extra)."""
    body, _, marker = line.partition(";")
    extra = ""
    m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    if m:
        extra = m.group(1)
        marker = re.sub(r"(and\s+)?extra\s*==\s*['\"][^'\"]+['\"]", "", marker).strip()
        marker = re.sub(r"^and\s+|\s+and$", "", marker).strip()
    name_m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", body)
    name, spec = name_m.group(1), name_m.group(2).strip()
    return Requirement(name, spec), marker.strip(), extra


def runtime_requirements() -> list[Requirement]:
    """Runtime requirements that apply to this Python, from metadata or (source tree) pyproject.toml."""
    try:
        lines = md.requires("minimost") or []
    except md.PackageNotFoundError:
        lines = _pyproject_dependencies()
    out = []
    for line in lines:
        req, marker, extra = _parse(line)
        if not extra and _marker_applies(marker):
            out.append(req)
    return out


def _pyproject_dependencies() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib
    except ImportError:  # Python 3.10
        text = path.read_text()
        block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
        return re.findall(r'"([^"]+)"', block)
    return tomllib.loads(path.read_text())["project"]["dependencies"]


def check_requirement(req: Requirement) -> tuple[bool, str]:
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        return False, f"[MISSING] {req.name}{req.spec}: not installed; {FIX}"
    try:
        importlib.import_module(IMPORT_NAMES.get(req.name, req.name.replace("-", "_")))
    except Exception as err:  # noqa: BLE001 - any import failure is what we report
        return False, f"[FAIL]    {req.name} {version}: installed but `import` fails ({type(err).__name__}: {err}); {FIX}"
    pinned = req.spec[2:] if req.spec.startswith("==") else None
    if pinned and version.split("+")[0] != pinned:
        return True, (f"[WARN]    {req.name} {version}: minimost is tested with {pinned}; "
                      f"it may work, but if something breaks {FIX}")
    return True, f"[OK]      {req.name} {version}"


def torch_device() -> str:
    """The device minimost will use by default: cuda, then mps, else cpu."""
    import torch
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def describe_machine() -> str:
    """A short description for reports and benchmark results: the GPU, or the CPU model, the vector
    instructions torch's kernels use, cores and threads.

    The instruction set is named because it changes results, not only speed: the same code, data and
    seeds trained the tiny kit's units to artefact baa620a95c77 on an AVX-512 machine and to
    b3442171d8e5 on an AVX2 one (docs/speech.md, "Building it").
    """
    import os

    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    isa = torch.backends.cpu.get_cpu_capability()        # "AVX2", "AVX512", "DEFAULT", ...
    return f"{model} ({isa}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def check_espeak() -> tuple[bool, str]:
    """Load libespeak-ng from the espeakng-loader wheel and initialise it (no system package needed)."""
    try:
        import espeakng_loader
    except ImportError:
        return False, f"[MISSING] espeak-ng: the espeakng-loader wheel is not installed; {FIX}"
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(2, 0, str(espeakng_loader.get_data_path()).encode(), 0)  # 2 = synchronous
        if rate <= 0:
            return False, f"[FAIL]    espeak-ng: espeak_Initialize returned {rate} (voice data not found)"
        version = lib.espeak_Info(None).decode()
    except OSError as err:
        return False, f"[FAIL]    espeak-ng: the bundled library does not load ({err})"
    return True, f"[OK]      espeak-ng {version} loads from the espeakng-loader wheel ({rate} Hz)"


def main() -> int:
    ok = True
    print(f"minimost environment check  (Python {platform.python_version()}, {platform.system()} {platform.machine()})")
    if not (3, 10) <= sys.version_info[:2] <= (3, 12):
        ok = False
        print(f"[FAIL]    Python {platform.python_version()}: minimost supports 3.10-3.12; create the venv with one of those")
    for req in runtime_requirements():
        good, line = check_requirement(req)
        ok &= good
        print(line)
    good, line = check_espeak()
    ok &= good
    print(line)
    try:
        print(f"[OK]      torch device: {torch_device()}")
    except ImportError:
        print("[MISSING] torch device: torch is not importable")
        ok = False
    for name, why in OPTIONAL.items():
        try:
            print(f"[OK]      {name} {md.version(name)} ({why.split(':')[0]})")
        except md.PackageNotFoundError:
            print(f"[--]      {name} not installed ({why})")
    print("everything required is present" if ok else "something required is missing: see the lines above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
