"""The production manifests checked against the code, since neither a Docker engine nor a cluster runs
here: deploy/Dockerfile, deploy/compose.yaml (a county on one host), deploy/k8s/ (a province: the
NATS Helm chart's values, the services' Deployments, Services, HorizontalPodAutoscaler and
PodDisruptionBudgets, the Jobs) and the scripts that make their secrets.

Every command they run in the image is a real ``xinfang`` command (the CLI's own argparse parses it);
every service, port, ``XF_*`` variable and probe path is the project's; every file they mount or copy
is in the repository or made by ``deploy/compose-secrets.sh`` / named by ``deploy/k8s/secrets.sh``
(both run here, with the project's own ``xinfang``); the Helm values use the chart's keys; the stream
declaration they run works against a real nats-server with the generated users; and kubectl accepts
every Kubernetes object. kubectl is on CI's machine (/usr/bin/kubectl); without it these tests fail,
never skip.

Offline, kubectl needs an API server even for ``apply --dry-run=client`` (discovery, and a GET of
the live object): :class:`FakeApiServer` answers discovery for the API groups the manifests use and
"not found" for every object, and ``--validate=false`` spares it the OpenAPI download. The schema
check kubectl would have made is done instead with the Kubernetes 1.32 JSON schemas, strict
(tests/fixtures/deploy/README.md says where every vendored file comes from).
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import jsonschema
import nats
import pytest
import uvicorn.config
import yaml

from services import runtime
from services.runtime import NatsServer, free_port
from shared import keys, natsauth, subjects, tokens
from shared.settings import DEFAULT_PORTS, REPO_ROOT, SERVICES, Settings

# What is decided here is decided before any database is touched (tests/conftest.py).
pytestmark = pytest.mark.one_database

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "deploy"
KUBECTL = "kubectl"  # /usr/bin/kubectl on CI's machine
IMAGE = "xinfang:0.1.0"  # what compose and kustomize name, and `docker build -t` makes (README)
SETTINGS_ENV = {f"XF_{name.upper()}" for name in Settings.model_fields}
# Variables of the xinfang containers that are not settings, and who reads them.
OTHER_ENV = {
    "PGPASSFILE": "libpq (psycopg): the database password's file, so no URL carries it",
    "FORWARDED_ALLOW_IPS": "uvicorn: whose X-Forwarded-For the resident routes' limits trust",
    "PYTHONDONTWRITEBYTECODE": "python: no .pyc beside the installed package (read-only root in k8s)",
    "PYTHONUNBUFFERED": "python: log lines leave at once",
    "PIP_NO_CACHE_DIR": "pip, at build: no cache in the image",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, at build: no look-up of a newer pip",
}
# Made at install time, never in git: compose.yaml's bind mounts under these come from this command.
GENERATED = {"secrets/": "deploy/compose-secrets.sh (xinfang keys init, nats-config, token create)"}
# The copies of each stream (XF_STREAM_REPLICAS) and the NATS servers, in compose and k8s alike.
CLUSTER_REPLICAS = 3


def generated(source: str) -> bool:
    """A bind mount's source (relative to deploy/) that an install step makes (GENERATED)."""
    return any(source == g.rstrip("/") or source.startswith(g) for g in GENERATED)


# --- reading the files ----------------------------------------------------------------------------

def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}``, as compose reads it with nothing set: the default."""
    def default(m: re.Match) -> str:
        assert m.group(2) is not None, f"${{{m.group(1)}}} has no default: compose would need it set"
        return m.group(2)
    return re.sub(r"\$\{([A-Z_]+)(?::-([^}]*))?\}", default, text)


def compose() -> dict:
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(encoding="utf-8")))


def xinfang_services(doc: dict) -> dict[str, dict]:
    """The compose services that run the xinfang image."""
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == IMAGE}


def k8s_files() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    return [K8S / r for r in kustomization["resources"]] + sorted((K8S / "jobs").glob("*.yaml"))


def k8s_objects() -> list[dict]:
    return [d for f in k8s_files() for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]


def pod_specs() -> list[tuple[str, dict]]:
    """(object name, pod spec) of every Deployment and Job."""
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in k8s_objects()
            if o["kind"] in ("Deployment", "Job")]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(dict(shlex.split(pair)[0].split("=", 1) for pair in re.findall(r"\S+=\S+", rest)))
    return env


def xinfang_parser() -> argparse.ArgumentParser:
    """The ``xinfang`` command's real parser, as services.cli.main builds it (caught before it parses)."""
    from services import cli

    class Built(Exception):
        pass

    def catch(self: argparse.ArgumentParser, *_args, **_kwargs):  # noqa: ANN202
        raise Built(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch):
        with pytest.raises(Built) as built:
            cli.main([])
    return built.value.args[0]


def parses(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    """True when ``xinfang ARGV`` is a command the CLI takes (``--help`` included)."""
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code == 0
    return True


DECLARE = ["xinfang", "streams", "declare"]  # the stream declaration, as admin, before the services


def image_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every process the manifests start in the image: ``xinfang`` arguments, or
    always ``xinfang …`` (the image's entrypoint)."""
    found = []
    for name, svc in xinfang_services(compose()).items():
        entry = svc.get("entrypoint") or ["xinfang"]
        argv = entry + list(svc.get("command") or [])
        found.append((f"compose {name}", argv))
    for name, spec in pod_specs():
        for c in spec["containers"]:
            found.append((f"k8s {name}", (c.get("command") or ["xinfang"]) + list(c.get("args") or [])))
    steps = dict(dockerfile())
    found.append(("Dockerfile", json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])))
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    """The ``xinfang`` commands the deploy files tell an operator to type (their comments and the
    secrets scripts), as argv; placeholders (…, <…>) are left out."""
    sources = [DEPLOY / "Dockerfile", DEPLOY / "compose.yaml", DEPLOY / "compose-secrets.sh",
               K8S / "secrets.sh", K8S / "nats-values.yaml", K8S / "kustomization.yaml", *k8s_files()]
    verbs = "up|run|migrate|keys|import|tail|nats-config|unit|reconcile|routing|scoring|report|token|simulate|streams"
    patterns = [rf"`?xinfang ((?:{verbs})\b[^`|>;)\n]*)", r"docker compose run --rm (?:--no-deps )?(?:-T )?cli ([^\n#`]*)",
                r"\$XINFANG ([^\n)]*)"]
    found = []
    for path in sources:
        for pattern in patterns:
            for m in re.finditer(pattern, path.read_text(encoding="utf-8")):
                text = re.split(r"\s{2,}|\s>|\s\||\s&&|\)|`", m.group(1).strip())[0].strip().rstrip(".,:;\\")
                if not text or "…" in text or "<" in text:
                    continue
                found.append((f"{path.relative_to(REPO_ROOT)}: {text}", shlex.split(text)))
    return found


# --- commands -------------------------------------------------------------------------------------

def test_every_command_run_in_the_image_is_a_real_xinfang_command() -> None:
    parser = xinfang_parser()
    commands = image_commands()
    assert any(argv[:1] == ["xinfang"] for _, argv in commands)
    for where, argv in commands:
        assert argv[0] == "xinfang", f"{where}: {argv} does not run xinfang"
        assert parses(parser, argv[1:]), f"{where}: `xinfang {shlex.join(argv[1:])}` is not a command xinfang takes"
    # compose and k8s both declare the streams (test_the_stream_declaration_... runs it).
    assert {where.split()[0] for where, argv in commands if argv == DECLARE} == {"compose", "k8s"}
    # The Dockerfile's entrypoint is the console script pip installs.
    scripts = re.search(r"\[project\.scripts\]\n(.*?)\n\n", (REPO_ROOT / "pyproject.toml").read_text(), re.S)
    assert scripts and 'xinfang = "services.cli:main"' in scripts.group(1)


def test_every_command_the_deploy_files_tell_an_operator_to_type_is_a_real_xinfang_command() -> None:
    parser = xinfang_parser()
    documented = documented_commands()
    assert len(documented) >= 10, documented  # the comments and scripts were read
    for where, argv in documented:
        assert parses(parser, argv), f"{where}: not a command xinfang takes"


def test_each_service_runs_in_compose_and_k8s_as_itself_on_its_default_port() -> None:
    doc = compose()
    running = {svc["command"][1]: (name, svc) for name, svc in xinfang_services(doc).items()
               if (svc.get("command") or [])[:1] == ["run"]}
    assert sorted(running) == sorted(SERVICES)
    for service, (name, svc) in running.items():
        port = DEFAULT_PORTS[service]
        assert name == service  # the DNS name Prometheus and the front use
        assert svc["expose"] == [str(port)]
        check = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check
    # The replicas the issue asks for: intake x3, routing x2.
    assert doc["services"]["intake"]["deploy"]["replicas"] == 3
    assert doc["services"]["routing"]["deploy"]["replicas"] == 2

    # The front: each service's port, to that service.
    front = (DEPLOY / "front" / "nginx.conf").read_text(encoding="utf-8")
    servers = re.findall(r"listen (\d+);\s*location / \{\s*set \$\w+ http://([\w-]+):(\d+);", front)
    assert sorted(servers) == sorted((str(p), s, str(p)) for s, p in DEFAULT_PORTS.items())
    assert doc["services"]["front"]["ports"] == [f"{p}:{p}" for p in DEFAULT_PORTS.values()]

    objects = k8s_objects()
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    assert sorted(deployments) == sorted(services) == sorted(SERVICES)

    def labels(service: str) -> dict:
        return {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "xinfang"}
    for service in SERVICES:
        dep, svc, port = deployments[service], services[service], DEFAULT_PORTS[service]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["run", service]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert dep["spec"]["template"]["metadata"]["labels"] == labels(service)
        assert dep["spec"]["selector"]["matchLabels"] == labels(service)
        assert svc["spec"]["selector"] == labels(service)
        assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # intake scales by its HorizontalPodAutoscaler, which owns the count; every service has a budget.
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "intake"}
    assert "replicas" not in deployments["intake"]["spec"]
    budgets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert sorted(budgets) == sorted(SERVICES)
    for service, pdb in budgets.items():
        assert pdb["spec"]["selector"]["matchLabels"] == labels(service)


def test_the_dockerfile_builds_the_installed_package_and_runs_xinfang_as_a_user() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert re.search(r'requires-python = ">=3\.11"', (REPO_ROOT / "pyproject.toml").read_text())
    assert ("RUN", "pip install . && cd / && rm -rf /opt/xinfang/src") in steps
    expose = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert expose == set(DEFAULT_PORTS.values())
    # Not root, and the uid compose and the pods run as.
    (user,) = [rest for word, rest in steps if word == "USER"]
    uid = user.split(":")[0]
    assert uid != "0" and "${XINFANG_UID:-" + uid + "}" in (DEPLOY / "compose.yaml").read_text()
    for _, spec in pod_specs():
        assert spec["securityContext"]["runAsUser"] == int(uid)


# --- settings and environment ---------------------------------------------------------------------

def container_envs() -> list[tuple[str, dict[str, str | None]]]:
    """(where, {name: value, or None when it comes from a Secret}) of every xinfang process."""
    found = [("Dockerfile", dockerfile_env())]
    for name, svc in xinfang_services(compose()).items():
        found.append((f"compose {name}", {**dockerfile_env(), **svc.get("environment", {})}))
    secret_keys = objects_by_name(secrets_sh_objects_for_names())
    for name, spec in pod_specs():
        for c in spec["containers"]:
            env = dict(dockerfile_env())
            for e in c.get("env", []):
                env[e["name"]] = e.get("value")
            for ref in c.get("envFrom", []):  # every key of the Secret becomes a variable
                env.update(dict.fromkeys(secret_keys[ref["secretRef"]["name"]].get("data", {})))
            found.append((f"k8s {name}", env))
    return found


def test_every_xf_variable_set_is_a_setting_and_every_other_one_is_read_by_something() -> None:
    for where, env in container_envs():
        for name in env:
            if name.startswith("XF_"):
                assert name in SETTINGS_ENV, f"{where}: {name} is not a setting (shared/settings.py)"
            else:
                assert name in OTHER_ENV, f"{where}: {name} is read by nothing we know"
    assert "FORWARDED_ALLOW_IPS" in inspect.getsource(uvicorn.config)
    # The NATS nodes' own XF_ variable is cluster.conf's, not a setting.
    cluster_conf = (DEPLOY / "nats" / "cluster.conf").read_text(encoding="utf-8")
    for name in ("nats-1", "nats-2", "nats-3"):
        for var, value in compose()["services"][name]["environment"].items():
            assert f"${var}" in cluster_conf and value == name


def test_every_container_environment_is_read_by_settings_as_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_value = {"XF_ID_HASH_KEY": "k1:" + "a" * 64, "XF_QUERY_CODE_KEY": "k1:" + "b" * 64}
    servers = {"compose": [f"nats://nats-{i}:4222" for i in (1, 2, 3)],  # all three nodes
               "k8s": ["nats://nats:4222"]}  # the chart's Service in front of its three servers
    service_processes = {f"compose {s}" for s in SERVICES} | {f"k8s {s}" for s in SERVICES}
    for where, env in container_envs():
        for name in list(os.environ):
            if name.startswith("XF_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            if value is None:  # from a Secret: a value of its kind
                value = secret_value.get(name, "postgresql://xinfang:secret@db:5432/xinfang")
            monkeypatch.setenv(name, value)
        settings = Settings()  # a value a setting does not take fails here
        assert settings.mode == "production", where
        if where in service_processes or where == "Dockerfile":
            # Reachable from the front, the Service, Prometheus.
            assert settings.http_host == "0.0.0.0", where
        if where in service_processes:
            assert {"XF_NATS_URL", "XF_STREAM_REPLICAS", "XF_NATS_CREDS"} <= set(env), where
        # Whoever names the bus or declares the streams names the same cluster and replicas.
        if "XF_STREAM_REPLICAS" in env:
            assert settings.stream_replicas == CLUSTER_REPLICAS, where
        if "XF_NATS_URL" in env:
            assert settings.nats_servers == servers[where.split()[0]], where


def test_probe_paths_exist_on_every_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:1", id_hash_key="k1:" + "a" * 64,
                        query_code_key="k1:" + "b" * 64)
    probed = set()
    for name, svc in xinfang_services(compose()).items():
        if "healthcheck" in svc:
            probed.add((name, re.search(r"http://127\.0\.0\.1:\d+(/\w+)", " ".join(svc["healthcheck"]["test"])).group(1)))
    for name, spec in pod_specs():
        for c in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c:
                    probed.add((name, c[probe]["httpGet"]["path"]))
    assert {s for s, _ in probed} == set(SERVICES)
    for service in SERVICES:
        app = runtime.app_factory(service)(settings)
        paths = {getattr(route, "path", None) for route in app.routes}
        for _, path in {p for p in probed if p[0] == service}:
            assert path in paths, f"{service} has no {path}"


# --- paths ----------------------------------------------------------------------------------------

def bind_mounts(svc: dict) -> list[tuple[str, str]]:
    """(host source relative to deploy/, container target) of a compose service's bind mounts."""
    found = []
    for volume in svc.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(("./", "../", "/")):
            found.append((posixpath.normpath(source), target))
    return found


def test_every_path_compose_and_the_dockerfile_name_is_in_the_repository_or_generated() -> None:
    doc = compose()
    for name, svc in doc["services"].items():
        for source, _ in bind_mounts(svc):
            if generated(source):
                continue
            assert (DEPLOY / source).exists(), f"compose {name}: ./{source} is neither in deploy/ nor generated"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "../", "/")):
                assert source in doc["volumes"], f"compose {name}: volume {source} is not declared"
        for secret in svc.get("secrets", []):
            assert secret in doc["secrets"], f"compose {name}: secret {secret} is not declared"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for secret in doc["secrets"].values():
        source = posixpath.normpath(secret["file"])
        assert generated(source) or (DEPLOY / source).exists(), source

    # What the monitoring containers are told to read is in what they mount.
    prometheus = doc["services"]["prometheus"]
    config = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    host = host_path(prometheus, config)
    assert host is not None and (DEPLOY / host).is_file(), config
    for rule_file in yaml.safe_load((DEPLOY / host).read_text())["rule_files"]:
        assert list((DEPLOY / host).parent.glob(rule_file)), rule_file
    grafana = doc["services"]["grafana"]
    for provider_file in (DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            folder = host_path(grafana, provider["options"]["path"])
            assert folder is not None and list((DEPLOY / folder).glob("*.json")), provider

    # The Dockerfile copies from the build context (the repository) what the context lets in.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for word, rest in dockerfile():
        if word == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") in allowed, f"COPY {source}: Dockerfile.dockerignore keeps it out"
    env = dockerfile_env()
    assert env["XF_CONFIG_DIR"] == "/etc/xinfang/config"
    assert ("COPY", "deploy/config/ /etc/xinfang/config/") in dockerfile()


def host_path(svc: dict, container_path: str) -> str | None:
    """Where a compose service's container path comes from on the host (relative to deploy/): a bind
    mount of it or of a folder above it, or a compose secret (/run/secrets/NAME)."""
    if container_path.startswith("/run/secrets/"):
        name = container_path.rsplit("/", 1)[1]
        if name in svc.get("secrets", []):
            return posixpath.normpath(compose()["secrets"][name]["file"])
        return None
    for source, target in bind_mounts(svc):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return posixpath.normpath(source + container_path[len(target):])
    return None


def test_k8s_mounts_and_references_name_what_secrets_sh_makes_and_the_image_reads(secrets_sh_objects: list[dict]) -> None:
    made = objects_by_name(secrets_sh_objects)
    config_dir = dockerfile_env()["XF_CONFIG_DIR"]
    for name, spec in pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e for e in c.get("env", [])}
            for e in env.values():
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in made[ref["name"]]["data"], f"{name}: {ref} is not made by secrets.sh"
            for ref in c.get("envFrom", []):
                assert ref["secretRef"]["name"] in made, f"{name}: {ref}"
            for path_var in ("XF_NATS_CREDS", "XF_TOKENS_FILE"):
                if path_var not in env:
                    continue
                folder, file = posixpath.split(env[path_var]["value"])
                volume = mounts.get(folder)
                assert volume is not None and "secret" in volume, f"{name}: {path_var} is in no Secret's folder"
                items = [i["path"] for i in volume["secret"].get("items", [])] or list(made[volume["secret"]["secretName"]]["data"])
                assert file in items, f"{name}: {path_var}={folder}/{file} is not in the mounted Secret"
                assert file in made[volume["secret"]["secretName"]]["data"]
            for mount_path, volume in mounts.items():
                if "configMap" in volume:
                    assert mount_path == config_dir and volume["configMap"]["name"] in made
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in made
            service = c["args"][1] if c.get("args", [])[:1] == ["run"] else None
            if service in keys.SERVICES:  # the services that hash need both keys
                assert {"XF_ID_HASH_KEY", "XF_QUERY_CODE_KEY"} <= set(env), name
            if service is not None:
                assert f"XF_{service.upper()}_DB_URL" in env and "XF_NATS_CREDS" in env, name
                assert env["XF_NATS_CREDS"]["value"].endswith(f"/{natsauth.service_user(service)}.json"), name
    configmap = made["xinfang-config"]
    assert sorted(configmap["data"]) == sorted(p.name for p in (DEPLOY / "config").iterdir() if p.is_file())


# --- secrets made at install time -----------------------------------------------------------------

@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/compose-secrets.sh run once, with the project's own xinfang for the image's, in a copy
    of its folder: the cli service's XF_DATA_DIR and XF_TOKENS_FILE mapped to the host as compose maps them."""
    folder = tmp_path_factory.mktemp("county")
    shutil.copy(DEPLOY / "compose-secrets.sh", folder)
    cli = compose()["services"]["cli"]
    # The script writes secrets/ beside itself; the console's xinfang writes <XF_DATA_DIR>/secrets.
    assert host_path(cli, f"{dockerfile_env()['XF_DATA_DIR']}/secrets") == "secrets"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
    env.update(XF_DATA_DIR=str(folder), XF_TOKENS_FILE=str(folder / host_path(cli, cli["environment"]["XF_TOKENS_FILE"])),
               XF_CONFIG_DIR=str(DEPLOY / "config"), XINFANG=str(Path(sys.executable).with_name("xinfang")))
    # Run as the README says, ./compose-secrets.sh (shutil.copy keeps its mode).
    run = subprocess.run([str(folder / "compose-secrets.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    return folder


def test_compose_secrets_makes_every_generated_file_compose_mounts_private_and_usable(county: Path) -> None:
    doc = compose()
    needed = set()
    for name, svc in xinfang_services(doc).items():
        env = {**dockerfile_env(), **svc.get("environment", {})}
        paths = [v for k, v in env.items() if k in ("XF_NATS_CREDS", "XF_TOKENS_FILE", "PGPASSFILE")]
        command = svc.get("command") or []
        if command[:1] == ["run"] and command[1] in keys.SERVICES:
            paths.append(str(keys.keys_file(Settings(data_dir=Path(env["XF_DATA_DIR"])))))
        for path in paths:
            host = host_path(svc, path)
            assert host is not None, f"compose {name}: {path} is mounted from nowhere"
            if generated(host):
                needed.add(host)
    for svc in doc["services"].values():
        needed |= {s for s, _ in bind_mounts(svc) if generated(s)}
    needed |= {posixpath.normpath(s["file"]) for s in doc["secrets"].values()}
    assert {"secrets/keys.json", "secrets/pgpass", "secrets/nats/auth.conf", "secrets/tokens/tokens.json",
            "secrets/tokens", "secrets"} <= needed
    for host in needed:  # files, and the folders compose mounts whole (the console's, the tokens')
        path = county / host
        assert path.exists(), f"{host} is mounted by compose.yaml but compose-secrets.sh did not make it"
        assert path.stat().st_mode & 0o077 == 0, f"{host} may be read by others"

    # Each is what its reader takes.
    settings = Settings(data_dir=county, tokens_file=county / "secrets/tokens/tokens.json")
    assert keys.load(settings).id_hash.current  # 0600, both keys
    for service in SERVICES:
        assert natsauth.read_creds(county / f"secrets/nats/{natsauth.service_user(service)}.json")["user"]
    assert "authorization" in (county / "secrets/nats/auth.conf").read_text()
    password = (county / "secrets/db_password").read_text().strip()
    assert len(password) == 48
    # libpq takes the pgpass line whose host, port, database and user match the URL's.
    (line,) = (county / "secrets/pgpass").read_text().splitlines()
    host, port, database, user, pgpass_password = line.split(":")
    assert pgpass_password == password and database == "*"
    postgres = doc["services"]["postgres"]["environment"]
    created = re.findall(r"CREATE DATABASE (\w+);", (DEPLOY / "postgres" / "init-databases.sql").read_text())
    for name, svc in xinfang_services(doc).items():
        for var, url in svc["environment"].items():
            if var.endswith("_DB_URL"):
                parsed = urllib.parse.urlsplit(url)
                assert (parsed.hostname, str(parsed.port), parsed.username) == (host, port, user), (name, var)
                assert parsed.hostname in doc["services"] and parsed.username == postgres["POSTGRES_USER"]
                assert parsed.password is None and parsed.path.lstrip("/") in created, (name, var)
    roles = sorted(r.principal.roles[0] for r in tokens.listed(settings))
    assert roles == ["clerk", "supervisor"]
    first = (county / "secrets/first-tokens.txt").read_text()
    assert re.fullmatch(r"clerk: \S+\nsupervisor: \S+\n", first)
    env_file = dict(line.split("=", 1) for line in (county / ".env").read_text().split())
    assert set(env_file) == {"XINFANG_UID", "XINFANG_GID"}


def test_each_nats_node_reads_cluster_conf_with_the_generated_users_beside_it(county: Path, tmp_path: Path) -> None:
    for name in ("nats-1", "nats-2", "nats-3"):
        svc = compose()["services"][name]
        etc = tmp_path / name / "etc-nats"
        etc.mkdir(parents=True)
        conf = svc["command"][svc["command"].index("--config") + 1]
        for source, target in bind_mounts(svc):
            if posixpath.dirname(target) == posixpath.dirname(conf):  # the config and what it includes
                shutil.copy(county / source if source.startswith("secrets/") else DEPLOY / source,
                            etc / posixpath.basename(target))
        check = subprocess.run([runtime.nats_server_binary(), "-t", "-c", str(etc / posixpath.basename(conf))],
                               env={**os.environ, **svc["environment"]}, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert {"cluster.conf", "auth.conf"} <= {p.name for p in etc.iterdir()}


def test_the_stream_declaration_of_compose_and_k8s_declares_the_streams_as_admin(county: Path, tmp_path: Path) -> None:
    assert any(argv == DECLARE for _, argv in image_commands())
    server = NatsServer(tmp_path / "nats", free_port(), auth_conf=county / "secrets/nats/auth.conf")
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XF_")}
        # One server here: one replica (a cluster's three is what compose and k8s set).
        env.update(XF_NATS_URL=server.url, XF_STREAM_REPLICAS="1", XF_NATS_CREDS=str(county / "secrets/nats/admin.json"))
        run = subprocess.run([sys.executable, "-m", "services.cli", *DECLARE[1:]], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

        async def streams() -> list[str]:
            nc = await nats.connect(server.url, **natsauth.file_options(county / "secrets/nats/admin.json"))
            try:
                return sorted([s.config.name for s in await nc.jetstream().streams_info()])
            finally:
                await nc.close()
        assert asyncio.run(streams()) == sorted([Settings().stream_name, subjects.DEAD_LETTER_STREAM])
    finally:
        server.stop()


# --- the NATS Helm chart ---------------------------------------------------------------------------

def chart_values() -> dict:
    return yaml.safe_load((FIXTURES / "nats-chart-2.14.2-values.yaml").read_text(encoding="utf-8"))


def nats_values() -> dict:
    return yaml.safe_load((K8S / "nats-values.yaml").read_text(encoding="utf-8"))


def unknown_keys(ours: dict, theirs: dict, path: str = "") -> list[str]:
    """Our keys the chart does not have. Below a key whose default is an empty map or a list (merge,
    patch, env, topologySpreadConstraints) anything goes: that is where the chart takes free values."""
    found = []
    for key, value in ours.items():
        where = f"{path}.{key}".lstrip(".")
        if key not in theirs:
            found.append(where)
        elif isinstance(value, dict) and isinstance(theirs[key], dict) and theirs[key]:
            found += unknown_keys(value, theirs[key], where)
    return found


def test_the_nats_values_use_only_keys_of_the_chart_and_give_the_production_shape() -> None:
    ours, theirs = nats_values(), chart_values()
    assert unknown_keys(ours, theirs) == []
    config = ours["config"]
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == CLUSTER_REPLICAS
    assert config["jetstream"]["enabled"] and config["jetstream"]["fileStore"]["pvc"]["enabled"]
    assert config["jetstream"]["merge"]["sync_interval"] == "always"  # DESIGN §8
    # The county's and the province's server are the same release.
    assert compose()["services"]["nats-1"]["image"] == f"{ours['container']['image']['repository']}:{ours['container']['image']['tag']}"
    # The services reach the release named `nats` through its Service on the client port.
    assert theirs["config"]["nats"]["port"] == 4222


def test_the_nats_servers_of_the_chart_include_the_users_from_the_secret_secrets_sh_makes(
        secrets_sh_objects: list[dict], county: Path, tmp_path: Path) -> None:
    values = nats_values()
    include = values["config"]["merge"]["$include"]
    (mount,) = [p["value"] for p in values["container"]["patch"] if p["path"] == "/volumeMounts/-"]
    (volume,) = [p["value"] for p in values["podTemplate"]["patch"] if p["path"] == "/spec/volumes/-"]
    assert mount["name"] == volume["name"]
    # The chart's config is /etc/nats-config/nats.conf; nats-server reads includes relative to it.
    assert posixpath.normpath(posixpath.join("/etc/nats-config", include)) == f"{mount['mountPath']}/auth.conf"
    made = objects_by_name(secrets_sh_objects)
    assert "auth.conf" in made[volume["secret"]["secretName"]]["data"]
    # The same layout on disk, with the chart's way of writing an include and the generated users.
    root = tmp_path / "etc"
    (root / "nats-config").mkdir(parents=True)
    Path(str(root) + mount["mountPath"].removeprefix("/etc")).mkdir(parents=True)
    shutil.copy(county / "secrets/nats/auth.conf", str(root) + mount["mountPath"].removeprefix("/etc") + "/auth.conf")
    (root / "nats-config" / "nats.conf").write_text(
        "{\n" f"  include {include};\n" f'  "jetstream": {{"store_dir": "{tmp_path / "js"}", "sync_interval": "always"}},\n'
        '  "port": 4222\n}\n')
    check = subprocess.run([runtime.nats_server_binary(), "-t", "-c", str(root / "nats-config" / "nats.conf")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


# --- Kubernetes: the objects kubectl would send --------------------------------------------------

def objects_by_name(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects}


def k8s_secrets_dir(folder: Path, county: Path) -> Path:
    """A province's secrets folder as secrets.sh's header tells to make it, from the county's files."""
    (folder / "tokens").mkdir(parents=True)
    shutil.copytree(county / "secrets" / "nats", folder / "nats")
    shutil.copy(county / "secrets" / "tokens" / "tokens.json", folder / "tokens" / "tokens.json")
    printed = subprocess.run([str(Path(sys.executable).with_name("xinfang")), "keys", "init", "--print"],
                             capture_output=True, text=True, timeout=60, check=True)
    (folder / "keys.env").write_text(printed.stdout)
    (folder / "db.env").write_text("".join(f"XF_{s.upper()}_DB_URL=postgresql://xinfang:pw@db:5432/xinfang_{s}\n"
                                           for s in SERVICES))
    return folder


@pytest.fixture(scope="module")
def secrets_sh_output(county: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = k8s_secrets_dir(tmp_path_factory.mktemp("province"), county)
    out = folder.parent / "secrets.yaml"
    with out.open("w") as f:
        run = subprocess.run([str(K8S / "secrets.sh"), str(folder), str(DEPLOY / "config")], stdout=f,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def secrets_sh_objects(secrets_sh_output: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(secrets_sh_output.read_text(encoding="utf-8")) if d]


@functools.cache
def secrets_sh_objects_for_names() -> list[dict]:
    """The names and data keys of what secrets.sh makes, without running it: read from its
    ``object secret generic NAME --from-…`` lines (the tests that run it check the two agree)."""
    text = (K8S / "secrets.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for kind, name, rest in re.findall(r"^object (secret generic|configmap) ([\w-]+)(.*)$", text, re.M):
        data = {}
        for source in re.findall(r"--from-env-file=\"\$secrets/(\w+)\.env\"", rest):
            data.update(dict.fromkeys({"keys": ["XF_ID_HASH_KEY", "XF_QUERY_CODE_KEY"],
                                       "db": [f"XF_{s.upper()}_DB_URL" for s in SERVICES]}[source]))
        data.update(dict.fromkeys(re.findall(r"--from-file=\"([\w.]+)=", rest)))
        found.append({"kind": kind, "metadata": {"name": name}, "data": data})
    return found


def test_secrets_sh_makes_the_objects_its_lines_say(secrets_sh_objects: list[dict]) -> None:
    made = {o["metadata"]["name"]: sorted(o.get("data", {})) for o in secrets_sh_objects}
    read = {o["metadata"]["name"]: sorted(o["data"]) for o in secrets_sh_objects_for_names()}
    read["xinfang-config"] = made["xinfang-config"]  # the whole directory, whatever it holds
    assert made == read
    for o in secrets_sh_objects:
        assert o["metadata"]["namespace"] == "xinfang"
        assert o["metadata"]["labels"] == {"app.kubernetes.io/part-of": "xinfang"}


def test_every_kubernetes_object_is_valid_against_the_kubernetes_schema(secrets_sh_objects: list[dict]) -> None:
    definitions = json.loads((FIXTURES / "k8s-1.32-strict-definitions.json").read_text(encoding="utf-8"))
    by_kind = {}
    for name, schema in definitions["$defs"].items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            by_kind[(api_version, gvk["kind"])] = name
    objects = k8s_objects() + secrets_sh_objects
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                             "Job", "Secret", "ConfigMap", "Namespace"}
    for o in objects:
        name = by_kind.get((o["apiVersion"], o["kind"]))
        assert name is not None, f"{o['apiVersion']} {o['kind']} is not served by Kubernetes 1.32"
        schema = {"$schema": definitions["$schema"], "$defs": definitions["$defs"], "$ref": f"#/$defs/{name}"}
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft202012Validator(schema).iter_errors(o)]
        assert errors == [], f"{o['kind']} {o['metadata']['name']}: {errors}"


class FakeApiServer:
    """Just enough of a Kubernetes API server for ``kubectl apply --dry-run=client`` offline:
    discovery of the groups below, and "not found" for every object (so each is "created")."""

    RESOURCES = {"v1": [("namespaces", "Namespace", False), ("services", "Service", True),
                        ("configmaps", "ConfigMap", True), ("secrets", "Secret", True)],
                 "apps/v1": [("deployments", "Deployment", True)],
                 "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
                 "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
                 "batch/v1": [("jobs", "Job", True)]}

    @classmethod
    def document(cls, path: str) -> dict | None:
        groups = [gv for gv in cls.RESOURCES if "/" in gv]
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in groups]}
        gv = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        if gv in cls.RESOURCES:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for n, k, ns in cls.RESOURCES[gv]]}
        return None

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[str]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                doc = cls.document(self.path.split("?")[0])
                body = doc or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                               "code": 404, "message": "not found"}
                data = json.dumps(body).encode()
                self.send_response(200 if doc else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def test_kubectl_apply_dry_run_accepts_every_manifest(secrets_sh_output: Path, tmp_path: Path) -> None:
    kubectl = shutil.which(KUBECTL)
    assert kubectl is not None, "kubectl is not installed (CI's machine has /usr/bin/kubectl)"
    expected = [f"{o['kind']}/{o['metadata']['name']}".lower() for o in k8s_objects()]
    expected += [f"{o['kind']}/{o['metadata']['name']}".lower()
                 for o in yaml.safe_load_all(secrets_sh_output.read_text()) if o]
    with FakeApiServer.running() as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "offline",
            "clusters": [{"name": "offline", "cluster": {"server": url}}],
            "users": [{"name": "offline", "user": {}}],
            "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}]}))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        out = ""
        for target in (["-k", str(K8S)], ["-f", str(K8S / "jobs")], ["-f", str(secrets_sh_output)]):
            run = subprocess.run([kubectl, "--cache-dir", str(tmp_path / "cache"), "apply", "--dry-run=client",
                                  "--validate=false", *target], env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            out += run.stdout
    created = sorted(re.sub(r"\.[a-z.]+/", "/", line.split()[0]) for line in out.splitlines() if "created (dry run)" in line)
    assert created == sorted(expected)


# --- compose: the Compose Specification -----------------------------------------------------------

def test_compose_yaml_is_valid_against_the_compose_specification() -> None:
    schema = json.loads((FIXTURES / "compose-spec.json").read_text(encoding="utf-8"))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(compose())]
    assert errors == []
    # Every secret the file names is a file, never a value written in it.
    doc = compose()
    assert all(set(s) == {"file"} for s in doc["secrets"].values())
    for name, svc in doc["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if var.endswith("_FILE") and not var.startswith("XF_"):  # POSTGRES_PASSWORD_FILE, GF_…__FILE
                assert str(value).startswith("/run/secrets/"), f"compose {name}: {var}"
            else:
                assert not re.search(r"PASSWORD|SECRET|_KEY$|TOKEN$", var), f"compose {name}: {var} is set inline"
            assert not re.search(r"://[^/@:]+:[^/@]+@", str(value)), f"compose {name}: {var} has a password"
