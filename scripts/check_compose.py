#!/usr/bin/env python3
"""Static checks of docker-compose.yml beyond the compose JSON schema (no Docker engine here):
every depends_on names a defined service, every build points at an existing Dockerfile stage,
every service with a healthcheck-conditioned dependant really has a healthcheck, every
mounted repository path exists, and the scheduler is published on the host's loopback only (its
port must not bypass the gateway's keys and limits)."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on", {})
        entries = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for dependency, spec in entries:
            if dependency not in services:
                problems.append(f"{name}: depends_on unknown service `{dependency}`")
            elif spec.get("condition") == "service_healthy" and "healthcheck" not in services[dependency]:
                problems.append(f"{name}: waits for `{dependency}` to be healthy but it has no healthcheck")
        build = service.get("build")
        if build:
            dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} missing")
            elif "target" in build:
                stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE)
                if build["target"] not in stages:
                    problems.append(f"{name}: build target `{build['target']}` not among stages {stages}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./") and not (ROOT / source).exists():
                problems.append(f"{name}: mounted path {source} does not exist")
    for port in services.get("scheduler", {}).get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"scheduler: port `{port}` is published beyond the host's loopback")
    for problem in problems:
        print(f"check_compose: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_compose: {len(services)} services, dependencies and build targets OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
