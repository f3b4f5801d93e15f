"""deploy/: the files parse, agree with each other and with what the application really reads and serves."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

import bot.settings
from adapters.registry import PLATFORMS
from bot.cli import HARD_EXIT_MARGIN_S
from bot.settings import CoreSettings
from tests.support.fake_openai import FakeOpenAI
from tests.support.helpers import LocalFilesAdapter

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENV_NAME = re.compile(r"\b((?:PEEKBOT|SLACK|FEISHU)_[A-Z0-9_]+)(\*)?")
DRAIN_TIMEOUT_S = CoreSettings.model_fields["drain_timeout_s"].default


def known_env_names() -> set[str]:
    """Every variable the settings classes (the core's and each platform's) read: ``env_prefix`` + field name."""
    names = {bot.settings.CONFIG_ENV}
    for value in [*vars(bot.settings).values(), *(platform.settings_class for platform in PLATFORMS)]:
        if isinstance(value, type) and issubclass(value, BaseSettings) and value.model_config.get("env_prefix"):
            prefix = value.model_config["env_prefix"]
            names.update(f"{prefix}{field}".upper() for field in value.model_fields)
    return names


def env_names_in(text: str) -> set[str]:
    return {name + ("*" if star else "") for name, star in ENV_NAME.findall(text)}


def seconds(value: str | int | float) -> float:
    """``60``, ``"60s"``, ``"2min"``, ``"1m30s"`` → seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts, f"not a duration: {value!r}"
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text())


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and " " not in key, f"bad line in {path.name}: {line!r}"
            values[key] = value
    return values


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def systemd_unit() -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (keys like ``Environment=`` may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in (DEPLOY / "systemd" / "peekbot.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not a key=value line: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    values = {}
    for entry in unit["Service"].get("Environment", []):
        for assignment in shlex.split(entry):
            key, _, value = assignment.partition("=")
            values[key] = value
    return values


# ------------------------------------------------------------------------ all files


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert {"compose.yml", "deployment.yaml", "pdb.yaml", "secret.example.yaml"} <= {f.name for f in files}
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, f"{path} is empty"


def test_every_setting_named_in_deploy_exists() -> None:
    known = known_env_names()
    assert {"PEEKBOT_OPENAI_MAX_CONCURRENCY", "SLACK_BOT_TOKEN", "FEISHU_APP_SECRET"} <= known
    unknown = {}
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for name in env_names_in(path.read_text(errors="replace")):
            wildcard = name.endswith("*")
            if not (any(k.startswith(name[:-1]) for k in known) if wildcard else name in known):
                unknown.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert unknown == {}


def test_the_env_example_sets_only_real_settings() -> None:
    example = env_file(DEPLOY / "systemd" / "peekbot.env.example")
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "FEISHU_APP_ID", "FEISHU_APP_SECRET"} <= set(example)
    assert set(example) <= known_env_names()
    assert seconds(example["PEEKBOT_DRAIN_TIMEOUT_S"]) == DRAIN_TIMEOUT_S


# ------------------------------------------------------------------------ Kubernetes


def test_k8s_deployment_has_gpu_probes_secrets_and_grace_period() -> None:
    objects = k8s_objects()
    assert all("namespace" not in doc["metadata"] for doc in objects.values()), "manifests must not pin a namespace"
    deployment = objects["Deployment/peekbot"]
    config = objects["ConfigMap/peekbot-config"]["data"]
    secret = objects["Secret/peekbot-secrets"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(config["PEEKBOT_HTTP_PORT"]) and config["PEEKBOT_HTTP_HOST"] == "0.0.0.0"
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {name: probe["path"] for name, probe in probes.items()} == {
        "startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert all(probe["port"] in ("http", port["containerPort"]) for probe in probes.values())
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # room to download and load a model
    assert pod["terminationGracePeriodSeconds"] > seconds(config["PEEKBOT_DRAIN_TIMEOUT_S"])
    liveness = container["livenessProbe"]  # a failing /healthz (hung model worker) restarts the pod
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > seconds(config["PEEKBOT_DRAIN_TIMEOUT_S"])

    refs = {kind: ref[kind]["name"] for ref in container["envFrom"] for kind in ref}
    assert refs == {"configMapRef": "peekbot-config", "secretRef": "peekbot-secrets"}
    known = known_env_names()
    assert set(secret["stringData"]) <= known and {"SLACK_BOT_TOKEN", "FEISHU_APP_SECRET"} <= set(secret["stringData"])
    assert set(config) - known == {"HF_HOME"}

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert {f"PersistentVolumeClaim/{claim}" for claim in claims.values()} <= set(objects)
    assert {mounts[name] for name in claims} == {config["PEEKBOT_DATA_DIR"], config["HF_HOME"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8s_selectors_and_kustomization_agree() -> None:
    objects = k8s_objects()
    labels = objects["Deployment/peekbot"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Deployment/peekbot"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["PodDisruptionBudget/peekbot"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service/peekbot"]["spec"]["selector"].items() <= labels.items()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert all((K8S / name).is_file() for name in listed)
    assert "secret.example.yaml" not in listed  # applying it would overwrite real tokens with placeholders
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(built.stdout)}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget"}


# ------------------------------------------------------------------------ compose


def test_compose_profiles_gpu_and_remote_wiring() -> None:
    spec = compose()
    services = spec["services"]
    profiles = {name: set(service.get("profiles", [])) for name, service in services.items()}
    assert all(profiles.values()), "every service needs a profile, or it would start with every profile"
    assert {n for n, p in profiles.items() if "local" in p} == {"peekbot"}
    assert {n for n, p in profiles.items() if "remote" in p} == {"vllm", "redis", "peekbot-remote"}

    def gpus(name: str) -> list[dict[str, Any]]:
        return services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])

    assert gpus("peekbot") == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpus("vllm") and not gpus("peekbot-remote") and not gpus("redis")

    remote = services["peekbot-remote"]["environment"]
    assert remote["PEEKBOT_BACKEND"] == "openai" and services["peekbot"]["environment"]["PEEKBOT_BACKEND"] == (
        "transformers")
    store = urlsplit(remote["PEEKBOT_STORE_URL"])
    assert store.scheme == "redis" and store.hostname in services and store.port == 6379
    server = urlsplit(remote["PEEKBOT_OPENAI_BASE_URL"])
    assert server.hostname == "vllm" and server.path == "/v1" and server.port == 8000
    vllm = services["vllm"]
    assert vllm["image"].split(":-")[-1].startswith("vllm/vllm-openai")
    command = vllm["command"]
    assert command[command.index("--model") + 1] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert command[command.index("--served-model-name") + 1] == remote["PEEKBOT_OPENAI_MODEL"]
    json.loads(command[command.index("--limit-mm-per-prompt") + 1])
    for dependency, condition in services["peekbot-remote"]["depends_on"].items():
        assert condition == {"condition": "service_healthy"} and "healthcheck" in services[dependency]


def test_compose_bot_services_drain_and_keep_state() -> None:
    spec = compose()
    declared = set(spec.get("volumes") or {})
    for name in ("peekbot", "peekbot-remote"):
        service = spec["services"][name]
        env = service["environment"]
        assert seconds(service["stop_grace_period"]) > seconds(env["PEEKBOT_DRAIN_TIMEOUT_S"])
        assert service["stop_signal"] == "SIGTERM" and env["PEEKBOT_HTTP_HOST"] == "0.0.0.0"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        (source,) = service["env_file"]
        assert source["path"] == "./peekbot.env"
        assert set(env) <= known_env_names() | {"HF_HOME"}
    for service in spec["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in declared, f"undeclared volume {source}"
    mounts = {v.split(":")[1] for v in spec["services"]["peekbot"]["volumes"]}
    assert {spec["services"]["peekbot"]["environment"]["PEEKBOT_DATA_DIR"], "/cache/huggingface"} <= mounts


def _compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is available here")
    (tmp_path / "deploy").mkdir()
    shutil.copy(DEPLOY / "compose.yml", tmp_path / "deploy" / "compose.yml")
    shutil.copy(DEPLOY / "systemd" / "peekbot.env.example", tmp_path / "deploy" / "peekbot.env")
    for profile in ("local", "remote"):
        checked = subprocess.run([*command, "-f", str(tmp_path / "deploy" / "compose.yml"), "--profile", profile,
                                  "config", "--quiet"], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr


# ------------------------------------------------------------------------ systemd


def test_systemd_unit_restarts_drains_and_is_hardened() -> None:
    unit = systemd_unit()
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert seconds(service["RestartSec"]) > 0 and "RestartMaxDelaySec" in service
    assert service["EnvironmentFile"].startswith("/etc/") and service["KillSignal"] == "SIGTERM"
    env = unit_environment(unit)
    drain = seconds(env.get("PEEKBOT_DRAIN_TIMEOUT_S", DRAIN_TIMEOUT_S))
    assert seconds(service["TimeoutStopSec"]) > drain
    # READY=1 comes after the model loaded; the watchdog leaves peekbot time to drain and exit by itself after a
    # hung model worker (exit 75, restarted by Restart=on-failure).
    assert seconds(service["TimeoutStartSec"]) >= 600
    assert seconds(service["WatchdogSec"]) > drain + HARD_EXIT_MARGIN_S
    assert service["User"] not in ("root", "0")
    assert service["ExecStart"].split()[-2:] == ["peekbot", "run"] or service["ExecStart"].endswith("/peekbot run")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    writable = service["ReadWritePaths"].split()
    assert env["PEEKBOT_DATA_DIR"] in writable and any(env["HF_HOME"].startswith(p) for p in writable)
    assert service.get("PrivateDevices", "no") == "no"  # the GPU's device nodes must stay visible
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert set(env) <= known_env_names() | {"HF_HOME", "PYTHONUNBUFFERED"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at an executable that does, keep everything else.
    text = (DEPLOY / "systemd" / "peekbot.service").read_text()
    unit = tmp_path / "peekbot.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.M))
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    too_new = re.compile(r"Unknown key '?(RestartSteps|RestartMaxDelaySec)'?")  # systemd < 254 ignores these
    complaints = [line for line in checked.stderr.splitlines() if line.strip() and not too_new.search(line)]
    assert complaints == []


# ------------------------------------------------------------------------ Dockerfile


def test_dockerfile_runs_as_non_root_with_healthcheck_and_exec_form() -> None:
    instructions = dockerfile()
    args = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    bases = [arg.split()[0] for kind, arg in instructions if kind == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in bases]
    assert all(base.startswith("nvidia/cuda:") and "runtime" in base for base in resolved)
    assert any(kind == "RUN" and "torch==" in arg and "download.pytorch.org/whl/cu" in args["TORCH_INDEX_URL"]
               for kind, arg in instructions)
    final = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM"):]
    users = [arg for kind, arg in final if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = {}
    for kind, arg in final:
        if kind == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(arg)))
    assert env["PEEKBOT_HTTP_HOST"] == "0.0.0.0"
    exposed = [arg for kind, arg in final if kind == "EXPOSE"]
    assert exposed == [env["PEEKBOT_HTTP_PORT"]]
    (volumes,) = [json.loads(arg) for kind, arg in final if kind == "VOLUME"]
    assert set(volumes) == {env["PEEKBOT_DATA_DIR"], env["HF_HOME"]}
    assert set(env) <= known_env_names() | {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HF_HOME",
                                            "PYTORCH_CUDA_ALLOC_CONF", "NVIDIA_VISIBLE_DEVICES",
                                            "NVIDIA_DRIVER_CAPABILITIES", "DEBIAN_FRONTEND"}
    assert dict(final)["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["peekbot"]  # exec form: JSON arrays
    assert json.loads(dict(final)["CMD"]) == ["run"]
    health = dict(final)["HEALTHCHECK"]
    assert "--start-period" in health and json.loads(health.split(" CMD ", 1)[1])[0] == "python3"


def test_dockerignore_keeps_what_the_image_copies() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "tests"} <= set(patterns)
    copied = [part for kind, arg in dockerfile() if kind == "COPY" and not arg.startswith("--from")
              for part in arg.split()[:-1]]
    assert {"pyproject.toml", "README.md", "bot", "inference"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in patterns), f"{source} is ignored"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_image_healthcheck_passes_against_the_running_bot(monkeypatch, tmp_path: Path) -> None:
    """The HEALTHCHECK command itself, run against the real HTTP server of a running bot (remote backend)."""
    import asyncio

    from bot.settings import Settings
    from bot.wiring import build_application

    (health,) = [arg for kind, arg in dockerfile() if kind == "HEALTHCHECK"]
    check = json.loads(health.split(" CMD ", 1)[1])
    port = _free_port()
    async with FakeOpenAI() as server:
        for name, value in {"PEEKBOT_BACKEND": "openai", "PEEKBOT_OPENAI_BASE_URL": server.base_url,
                            "PEEKBOT_OPENAI_MODEL": server.model, "PEEKBOT_OPENAI_API_KEY": server.api_key or "",
                            "PEEKBOT_DATA_DIR": str(tmp_path / "data"), "PEEKBOT_HTTP_HOST": "127.0.0.1",
                            "PEEKBOT_HTTP_PORT": str(port)}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("PEEKBOT_CONFIG", raising=False)

        async def run_check() -> int:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *check[1:], stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(process.wait(), 30)

        async with build_application(Settings(), adapters=[LocalFilesAdapter()]):
            assert await run_check() == 0
            import aiohttp

            async with aiohttp.ClientSession() as session:
                container = k8s_objects()["Deployment/peekbot"]["spec"]["template"]["spec"]["containers"][0]
                probed = {container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
                for path in probed:  # the probes' paths are routes the bot serves
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        assert response.status in (200, 503) and "json" in response.content_type
        assert await run_check() != 0  # and it fails once the bot is gone
