"""Which build of the core runs: mypyc-compiled modules when they match the sources, else Python.

The compiled modules (built by bin/build-core into build/core-native) are only put on the package's
path when their stamp equals a hash of the current core sources, so a changed source is never
served by a stale build: it runs as pure Python, with a warning, until bin/bootstrap rebuilds.
Standard library only: bin/build-core loads this file on its own to compute the same stamp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path

CORE_DIR = Path(__file__).resolve().parent
NATIVE_DIR = CORE_DIR.parent.parent / "build" / "core-native"
STAMP = "stamp"
# the rules and their state; models and catalog stay pydantic classes
COMPILED = ("state", "formulas", "sku", "derive", "orders", "reservations")

log = logging.getLogger("streams.core")


def source_stamp() -> str:
    """A hash of every source the compiled modules were built from, and the Python they target."""
    digest = hashlib.sha256(sys.version.encode())
    sources = [*sorted(CORE_DIR.glob("*.py")), CORE_DIR.parent / "errors.py"]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules first on the core package's path when they are current."""
    stamp = NATIVE_DIR / STAMP
    if not stamp.is_file():
        log.warning(
            "streams.core: no compiled core in %s; running pure Python (./bin/bootstrap builds it)",
            NATIVE_DIR,
        )
        return False
    if stamp.read_text() != source_stamp():
        log.warning(
            "streams.core: the compiled core is older than the sources; running pure Python "
            "until ./bin/bootstrap rebuilds it"
        )
        return False
    try:
        for shared in NATIVE_DIR.glob("*__mypyc.cpython-*.so"):  # the runtime the modules share
            name = shared.name.split(".", 1)[0]
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, shared)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[name] = module
    except (ImportError, AssertionError) as error:
        log.warning("streams.core: the compiled core does not load (%s); running Python", error)
        return False
    package_path.insert(0, str(NATIVE_DIR / "streams" / "core"))
    return True


def compiled_modules() -> list[str]:
    """The core modules this process actually runs compiled (for tests and the benchmark)."""
    out = []
    for name in COMPILED:
        module = sys.modules.get(f"streams.core.{name}")
        if module is not None and not str(getattr(module, "__file__", "")).endswith(".py"):
            out.append(name)
    return out
