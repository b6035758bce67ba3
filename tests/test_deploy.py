"""deploy/ (issue 6, part 2): every manifest parses; the KubeRay manifests have the three role groups; every
srum command they run parses with the real CLI and config; images match the pinned Ray version."""

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from srum.cli import _parser
from srum.config import TrainConfig, load_config

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
RAY_VERSION = re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
TORCH_PIN = re.search(r"torch==[0-9.]+", (ROOT / "scripts" / "setup.sh").read_text()).group(0)
IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"
ROLES = {"generator", "judge", "learner"}


def docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def values(obj, key):
    """Every value of `key` anywhere in a nested YAML document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from values(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from values(v, key)


def check_srum_command(argv: list[str], config_root: Path = ROOT) -> None:
    """The command parses with `srum`'s own parser; for `train`, its config file exists and loads with its overrides."""
    assert argv[0] == "srum", argv
    args = _parser().parse_args(argv[1:])  # SystemExit (a failed test) on an unknown subcommand or flag
    if args.command == "train":
        config = config_root / args.config
        assert config.exists(), f"{args.config} does not exist in the repository"
        load_config(TrainConfig, config, list(args.overrides) + ([f"engine={args.engine}"] if args.engine else []))


def test_every_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert {f.name for f in files} >= {"prometheus.yml", "cluster.yaml", "raycluster.yaml", "rayjob.yaml", "storage.yaml"}
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f


def test_every_image_is_the_pinned_ray_release():
    for f in sorted(DEPLOY.rglob("*.yaml")):
        for image in values(docs(f.relative_to(DEPLOY)), "image"):
            assert image == IMAGE, (f, image)
        for v in values(docs(f.relative_to(DEPLOY)), "rayVersion"):
            assert v == RAY_VERSION, (f, v)


def test_kuberay_cluster_has_a_gpu_group_per_role():
    (cluster,) = docs("kuberay/raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == ROLES
    for name, g in groups.items():
        (container,) = g["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1, name
        assert g["template"]["metadata"]["labels"]["srum.role"] == name
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_kuberay_job_runs_srum_train_on_the_same_cluster():
    (job,) = docs("kuberay/rayjob.yaml")
    (cluster,) = docs("kuberay/raycluster.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # one layout, written twice
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["srum", "train", "--engine", "ray"]
    # /srum holds the repository's configs/ (deploy/kuberay/storage.yaml)
    check_srum_command([a.replace("/srum/configs/", "configs/") for a in argv])
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert env["pip"] == [TORCH_PIN, f"/srum/dist/srum-{version}-py3-none-any.whl"]
    # the groups' GPUs cover what the job asks for: one per generator, judge and learner
    args = _parser().parse_args(argv[1:])
    cfg = load_config(TrainConfig, ROOT / "configs" / Path(args.config).name, args.overrides)
    gpus = {g["groupName"]: g["replicas"] for g in cluster["spec"]["workerGroupSpecs"]}
    assert cfg.ray.generators * cfg.ray.generator.num_gpus <= gpus["generator"]
    assert cfg.ray.judges * cfg.ray.judge.num_gpus <= gpus["judge"]
    assert cfg.ray.learner.num_gpus <= gpus["learner"]


def group_pools(cluster) -> dict[str, dict[str, float]]:
    """Each worker group's custom resources, as its rayStartParams declare them to `ray start --resources`."""
    out = {}
    for g in cluster["spec"]["workerGroupSpecs"]:
        raw = g["rayStartParams"].get("resources", '"{}"')
        out[g["groupName"]] = json.loads(json.loads(raw) if raw.startswith('"') else raw)
    return out


def test_kuberay_pools_match_the_config_the_job_runs():
    """Every role asks for a custom resource that its own group's pods offer and no other group does, so each role
    lands on its pool; autoscaling is on and the groups' sizes cover the actors the job starts."""
    (job,) = docs("kuberay/rayjob.yaml")
    cluster = {"spec": job["spec"]["rayClusterSpec"]}
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    argv = shlex.split(job["spec"]["entrypoint"])
    args = _parser().parse_args(argv[1:])
    cfg = load_config(TrainConfig, ROOT / "configs" / Path(args.config).name, args.overrides)
    pools = group_pools(cluster)
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    wanted = {"generator": (cfg.ray.generator, cfg.ray.generators), "judge": (cfg.ray.judge, cfg.ray.judges),
              "learner": (cfg.ray.learner, cfg.ray.learners)}
    for role, (res, n) in wanted.items():
        assert res.resources, f"ray.{role}.resources: the job does not pin {role}s to a pool"
        for name, units in res.resources.items():
            offers = [g for g, p in pools.items() if name in p]
            assert offers == [role], (role, name, offers)
            assert groups[role]["maxReplicas"] * pools[role][name] >= n * units, role
            assert groups[role]["minReplicas"] * pools[role][name] >= units, role  # one actor placeable at start


def test_job_submit_script():
    script = (DEPLOY / "job_submit.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / "job_submit.sh")]).returncode == 0
    line = " ".join(script.split('"$RAY" job submit', 1)[1].replace("\\\n", " ").splitlines()[0].split())
    assert "--address \"$ADDRESS\" --working-dir ." in line and '"RAY_JOB_STOP_WAIT_TIME_S": "30"' in line
    argv = [a for a in shlex.split(line.split(" -- ", 1)[1]) if a != "$@"]
    check_srum_command([a.replace("$OUT", "/tmp/run") for a in argv])


def test_cluster_launcher_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    (cfg,) = docs("cluster.yaml")
    validate_config(prepare_config(cfg))  # Ray's own schema for `ray up`
    assert cfg["provider"]["type"] in ("aws", "local")
    assert ROLES <= set(cfg["available_node_types"])
    assert cfg["setup_commands"][0] == f"pip install {TORCH_PIN}"


def test_prometheus_scrapes_the_ray_head():
    (prom,) = docs("prometheus.yml")
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "ray"]
    assert "127.0.0.1:8090" in job["static_configs"][0]["targets"]
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


def test_srum_commands_in_the_deploy_guide_parse():
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    commands = [shlex.split(line.split(" #")[0]) for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    commands = [argv[next(i for i, a in enumerate(argv + ["-"]) if "=" not in a):] for argv in commands]  # drop VAR=value
    srum = [argv for argv in commands if argv and argv[0] in (".venv/bin/srum", "srum")]
    assert len(srum) >= 2
    for argv in srum:
        check_srum_command(["srum"] + argv[1:])
