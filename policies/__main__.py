"""The popstack CrossGuard policy pack: `pulumi preview --policy-pack policies` runs this file.

Constructing PolicyPack starts the analyzer's gRPC server on 127.0.0.1, writes its
port to stdout and blocks until the process is stopped. So nothing may import this
module in-process: `popstack plan` and the tests import `policies.rules` instead.
"""

import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent


def import_pack_package() -> None:
    """Import this directory as the package `policies`, whatever the directory is named.

    The CLI runs this file through runpy with the pack directory as sys.path[0] and
    its own virtualenv, where the repository is not installed, so `policies` is not
    importable by name there.
    """
    spec = importlib.util.spec_from_file_location(
        "policies", PACK_DIR / "__init__.py", submodule_search_locations=[str(PACK_DIR)]
    )
    assert spec is not None and spec.loader is not None, f"{PACK_DIR} is not a package"
    package = importlib.util.module_from_spec(spec)
    sys.modules["policies"] = package
    spec.loader.exec_module(package)


import_pack_package()

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.pack import PACK_NAME, build_policies  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=build_policies(),
    description="Tags, least privilege, data safety and pod hygiene for popstack event stacks",
)
