#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes (no cluster needed): every overlay renders with
`kubectl kustomize`, validates with `kubernetes-validate --strict`, and stays in step with the
binaries — every environment variable a container sets is one the binary reads (from its
`--help`), container ports match the listen addresses, and probes hit the real health routes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/ollama", "overlays/dev", "overlays/tracing"]
BIN_DIR = Path(os.environ.get("LLMGW_BIN_DIR", ROOT / "target" / "debug"))
# Read by the shared telemetry crate (not clap flags) or used only inside the manifest.
COMMON_ENV = {"RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "POD_IP"}


def env_names(binary: str) -> set:
    help_text = subprocess.run([str(BIN_DIR / binary), "--help"], capture_output=True, text=True,
                               check=True).stdout
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text)) | COMMON_ENV


def port_of(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


def main() -> int:
    problems = []
    known = {"gateway": env_names("gateway"), "scheduler": env_names("scheduler")}
    for overlay in OVERLAYS:
        rendered = subprocess.run(["kubectl", "kustomize", str(KUBE / overlay)], capture_output=True, text=True)
        if rendered.returncode != 0:
            problems.append(f"{overlay}: kustomize failed: {rendered.stderr.strip()}")
            continue
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmgw-{overlay.replace('/', '-')}.yaml"
        path.write_text(rendered.stdout)
        validated = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(path)],
                                   capture_output=True, text=True)
        if validated.returncode != 0:
            problems.append(f"{overlay}: kubernetes-validate: {validated.stdout.strip()} {validated.stderr.strip()}")
        documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        for doc in documents:
            if doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                name = container["name"]
                if name not in known:
                    continue
                env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
                for unknown in sorted(set(env) - known[name]):
                    problems.append(f"{overlay}: {name} sets {unknown}, which the binary does not read")
                ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
                if name == "gateway":
                    if port_of(env["GATEWAY_LISTEN"]) != ports.get("http"):
                        problems.append(f"{overlay}: gateway listens on {env['GATEWAY_LISTEN']} but exposes {ports}")
                    if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
                        problems.append(f"{overlay}: gateway readiness must be /readyz")
                    if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
                        problems.append(f"{overlay}: gateway liveness must be /healthz")
                if name == "scheduler":
                    if port_of(env["SCHEDULER_LISTEN"]) != ports.get("grpc"):
                        problems.append(f"{overlay}: scheduler listens on {env['SCHEDULER_LISTEN']} but exposes {ports}")
                    if container["readinessProbe"].get("grpc", {}).get("port") != ports.get("grpc"):
                        problems.append(f"{overlay}: scheduler readiness must be gRPC health on its port")
                    if port_of(env["SCHEDULER_METRICS_LISTEN"]) != ports.get("metrics"):
                        problems.append(f"{overlay}: scheduler metrics port mismatch")
    lint = subprocess.run(["yamllint", "-d", "{extends: default, rules: {line-length: {max: 120}, "
                           "document-start: disable, comments: {min-spaces-from-content: 1}}}", str(KUBE)],
                          capture_output=True, text=True)
    if lint.returncode != 0:
        problems.append(f"yamllint:\n{lint.stdout.strip()}")
    for problem in problems:
        print(f"check_kubernetes: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_kubernetes: {len(OVERLAYS)} renderings valid and in step with the binaries")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
