"""The image recipe, rehearsed: k8s/image/Dockerfile's COPY lines and build steps run in a clean temporary
folder (the production install from uv.lock into a fresh virtual environment, static files collected), then
the start check every pod passes with the production environment (the settings import, the web app and the
Celery tasks load, `manage.py check --deploy` with warnings as failures). No base image can be pulled here,
so this is how the recipe is kept from rotting; uv's cache makes the install take seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from packaging.markers import Marker

from tests.k8s import dockerfile, manifests
from tests.k8s.dockerfile import REPOSITORY

STEPS_SCRIPT = REPOSITORY / "k8s" / "image" / "steps.sh"
NON_ROOT_UID = "10001"


def _uv() -> str:
    found = REPOSITORY / ".tools" / "bin" / "uv"
    if found.exists():
        return str(found)
    on_path = shutil.which("uv")
    assert on_path, "uv is needed to rehearse the image (make install puts it in .tools/bin)"
    return on_path


def _stage(name: str) -> dockerfile.Stage:
    return next(stage for stage in dockerfile.stages() if stage.name == name)


def production_configuration() -> dict[str, str]:
    """The ConfigMap the pods read, as the production overlay renders it."""
    config_maps = manifests.find(manifests.render(manifests.K8S / "portal" / "overlays" / "production"), "ConfigMap")
    assert len(config_maps) == 1
    return {str(key): str(value) for key, value in config_maps[0]["data"].items()}


def production_secret_placeholders() -> dict[str, str]:
    """What the `genai-portal` Secret holds (k8s/README.md), with values of the right shape."""
    return {
        "DJANGO_SECRET_KEY": Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        "PORTAL_SECRET_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgres://portal@postgres.invalid:5432/portal",
        "REDIS_URL": "redis://redis.invalid:6379/0",
    }


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def rehearsed_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage, rehearsed: its context copies into a clean folder standing for /app, then its steps."""
    build = _stage("build")
    root = tmp_path_factory.mktemp("image")
    workdir = build.of("WORKDIR")[-1]
    app = root / workdir.strip("/")
    app.mkdir(parents=True)
    # As k8s/image/Dockerfile.dockerignore keeps them out of the context (a checkout's built extensions included).
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "var", "node_modules")
    for sources, destination in dockerfile.copies(build):
        if not destination.startswith(workdir):
            continue  # tools placed elsewhere in the image (uv, the steps script) are the host's here
        target = root / destination.strip("/")
        for source in sources:
            origin = REPOSITORY / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    recipe_env = dockerfile.environment(build)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "UV": _uv(),
        # The host's interpreter stands for the image's (both CPython 3.11); bytecode is compiled in the image
        # only (UV_COMPILE_BYTECODE), which would cost the rehearsal seconds and prove nothing more.
        **{key: value for key, value in recipe_env.items() if key not in ("UV_PYTHON", "UV_COMPILE_BYTECODE")},
        "UV_PYTHON": str(Path(sys.base_prefix) / "bin" / "python3"),
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    timings = []
    for step, directory in dockerfile.steps(build):
        assert directory == workdir, f"step {step} runs in {directory}, not the WORKDIR {workdir}"
        started = time.monotonic()
        _run([str(STEPS_SCRIPT), step, str(app)], cwd=app, env=env)
        timings.append(f"{step} {time.monotonic() - started:.1f}s")
    print("image rehearsal:", ", ".join(timings))
    return app


def test_the_build_steps_are_compiler_install_extensions_then_collectstatic() -> None:
    steps = [step for step, _ in dockerfile.steps(_stage("build"))]
    assert steps == ["compiler", "install", "extensions", "collectstatic"]


def test_the_extensions_are_built_in_the_image_for_its_interpreter(rehearsed_image: Path) -> None:
    """Built by the `extensions` step from the copied sources (the checkout's own build is not copied), and loaded."""
    built = sorted((rehearsed_image / "portal" / "usage").glob("_*.so"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert [path.name for path in built] == [f"_cloudevents_scan{suffix}", f"_native{suffix}", f"_otlp_scan{suffix}"]
    _run(
        [
            str(rehearsed_image / ".venv" / "bin" / "python"),
            "-c",
            "import portal.usage._native; from portal.usage import otlp_wire; assert otlp_wire._native_scan",
        ],
        cwd=rehearsed_image,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_virtual_environment_holds_exactly_the_locked_production_packages(rehearsed_image: Path) -> None:
    exported = _run(
        [_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-header", "--no-emit-project"],
        cwd=REPOSITORY,
        env={**os.environ},
    ).stdout
    locked = []
    for line in exported.splitlines():
        if not line or line.startswith((" ", "#", "-e")):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue  # e.g. a backport for an older Python than this one
        locked.append(requirement.split("==")[0].strip().lower().replace("_", "-"))
    locked.sort()
    listing = _run(
        [
            str(rehearsed_image / ".venv" / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ],
        cwd=rehearsed_image,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    installed = sorted(name.strip().lower().replace("_", "-") for name in listing.split())
    assert installed == locked
    assert "pytest" not in installed
    assert "mypy" not in installed


def test_static_files_are_collected(rehearsed_image: Path) -> None:
    static = rehearsed_image / "var" / "static"
    assert (static / "admin" / "css" / "base.css").is_file()
    assert (static / "rest_framework").is_dir()


def test_the_production_start_check_passes(rehearsed_image: Path) -> None:
    runtime_env = dockerfile.environment(_stage("runtime"))
    env = {
        "PATH": f"{rehearsed_image / '.venv' / 'bin'}:/usr/bin:/bin",
        **{key: value for key, value in runtime_env.items() if key != "PATH"},
        "PORTAL_VAR_DIR": str(rehearsed_image / "var"),
        **production_configuration(),
        **production_secret_placeholders(),
    }
    result = _run([str(STEPS_SCRIPT), "check", str(rehearsed_image)], cwd=rehearsed_image, env=env)
    assert "System check identified no issues" in result.stdout + result.stderr


def test_the_start_check_fails_on_a_deployment_warning(rehearsed_image: Path) -> None:
    """Without HSTS, `check --deploy` only warns; the start check treats that as a failure."""
    env = {
        "PATH": f"{rehearsed_image / '.venv' / 'bin'}:/usr/bin:/bin",
        "PORTAL_VAR_DIR": str(rehearsed_image / "var"),
        **production_configuration(),
        **production_secret_placeholders(),
        "PORTAL_HSTS_SECONDS": "0",
    }
    result = subprocess.run(
        [str(STEPS_SCRIPT), "check", str(rehearsed_image)],
        cwd=rehearsed_image,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr


def test_the_final_stage_runs_as_a_non_root_user_without_uv_or_compilers() -> None:
    runtime = _stage("runtime")
    assert runtime.base == _stage("build").base  # the same interpreter the build installed for
    assert runtime.base.endswith("-slim-bookworm")  # no gcc in the slim images
    assert runtime.of("USER") == [f"{NON_ROOT_UID}:{NON_ROOT_UID}"]
    assert [line for line in runtime.of("COPY") if "--from=uv" in line] == []
    assert not any("apt-get" in line or "pip" in line for line in runtime.of("RUN"))
    assert runtime.of("COPY")[-1] == "--from=build /app /app"
