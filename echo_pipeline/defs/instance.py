"""The Dagster instance the `echo-os` CLI uses: always a persistent DAGSTER_HOME.

With DAGSTER_HOME unset Dagster would use a temporary home that is deleted at exit (runs and
lineage lost), so the CLI defaults to `./.dagster_home` beside `./artifacts` and seeds it with the
project's dagster.yaml. A user's own DAGSTER_HOME is honoured as it is.
"""

import os
import shutil
from pathlib import Path

import dagster as dg

from echo_pipeline.settings import PACKAGE_DIR

DEFAULT_HOME = ".dagster_home"
INSTANCE_TEMPLATE = PACKAGE_DIR.parent / "dagster.yaml"


def ensure_dagster_home() -> Path:
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured).expanduser().resolve() if configured else (Path.cwd() / DEFAULT_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not configured and not (home / "dagster.yaml").exists() and INSTANCE_TEMPLATE.is_file():
        shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance() -> dg.DagsterInstance:
    ensure_dagster_home()
    return dg.DagsterInstance.get()


def ensure_partition(instance: dg.DagsterInstance, slug: str) -> bool:
    """Register the project's partition; True when it was new."""
    from echo_pipeline.defs.partitions import projects_partitions

    if instance.has_dynamic_partition(projects_partitions.name, slug):
        return False
    instance.add_dynamic_partitions(projects_partitions.name, [slug])
    return True
