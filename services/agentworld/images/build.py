"""Build the runtime image once and one small image per environment bundle, in parallel, skipping unchanged bundles.

Every environment image is `FROM` the runtime image plus a single COPY of its bundle, so N environments share all
layers but one (a few hundred KB each). An image is skipped when an image with the same tag already carries the
bundle's content hash and was built on the current runtime image (both are labels).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentworld.bundle import BUNDLE_FILES, compute_content_hash, load_bundle
from agentworld.images.base import BASE_IMAGE, build_base_image
from agentworld.images.errors import DockerUnavailable, ImageBuildError
from agentworld.images.paths import cache_dir, dockerfiles_dir, project_root

RUNTIME_IMAGE = "agentworld/runtime:local"
DEFAULT_TAG_PREFIX = "agentworld/env-"
INDEX_NAME = "images.json"
LABEL_ENV_ID = "dev.agentworld.env-id"
LABEL_CONTENT_HASH = "dev.agentworld.content-hash"
LABEL_RUNTIME_ID = "dev.agentworld.runtime-id"
LABEL_MANAGED = "dev.agentworld.managed"
LABEL_RECIPE = "dev.agentworld.recipe"
# Bump when the way an environment image is assembled changes, so existing images stop counting as up to date.
IMAGE_FORMAT = "2"


@dataclass
class EnvImage:
    """One built (or skipped) environment image; what the index file records per environment."""

    env_id: str
    image: str
    image_id: str
    content_hash: str
    size: int
    added_bytes: int
    skipped: bool = False
    build_s: float = 0.0
    digest: str | None = None
    pushed: str | None = None
    env_ids: list[str] = field(default_factory=list)


def docker_client(timeout: int = 600):
    """A docker SDK client for the local engine; DockerUnavailable with a hint when none answers."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            f"no Docker engine answers ({exc}); start one (tests/infra/install-docker.sh starts dockerd)"
        ) from exc
    return client


def image_name(env_id: str, tag_prefix: str = DEFAULT_TAG_PREFIX) -> str:
    """Repository for an env id: Docker names allow neither '_' runs nor uppercase, so '_' becomes '-'."""
    name = re.sub(r"[^a-z0-9.-]+", "-", env_id.lower()).strip("-.")
    if not name:
        raise ImageBuildError(f"environment id {env_id!r} gives no valid image name")
    return f"{tag_prefix}{name}"


def _recipe(dockerfile: bytes) -> str:
    """Identifies how an image was assembled (Dockerfile + format): part of the up-to-date check."""
    return hashlib.sha256(IMAGE_FORMAT.encode() + b"\0" + dockerfile).hexdigest()[:16]


def _up_to_date(image, content_hash: str, runtime_id: str, recipe: str) -> bool:
    labels = image.labels or {}
    return (labels.get(LABEL_CONTENT_HASH) == content_hash and labels.get(LABEL_RUNTIME_ID) == runtime_id
            and labels.get(LABEL_RECIPE) == recipe)


def _hash_tag(content_hash: str) -> str:
    return content_hash.split(":", 1)[-1][:16]


def _tar_context(files: dict[str, bytes]) -> io.BytesIO:
    """A build context with fixed owners and times, so the same bundle always gives the same COPY layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(payload), 0o644, 0, 0, 0
            tar.addfile(info, io.BytesIO(payload))
    buf.seek(0)
    return buf


# Client-side dependencies envd never imports (cluster, image building, LLM SDKs, synthesis): left out of the image
# to keep it small and its build fast. The CLI keeps their imports inside command functions.
# kubernetes stays: the chart runs the gateway (--backend kubernetes) and the controller from this image.
IMAGE_EXCLUDED = frozenset({"docker", "anthropic", "openai", "faker"})


def _runtime_requirements() -> list[str]:
    """agentworld's own runtime dependencies (no extras, none of IMAGE_EXCLUDED): what the runtime image installs."""
    reqs = importlib.metadata.requires("agentworld") or []
    keep = []
    for r in reqs:
        name = re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower()
        if "extra ==" not in r and name not in IMAGE_EXCLUDED:
            keep.append(r)
    return keep


def _pip(*args: str, cwd: Path | None = None) -> None:
    # A fixed SOURCE_DATE_EPOCH makes the agentworld wheel byte-identical for unchanged sources, so the runtime
    # image's layer cache (and with it every environment image) survives a rebuild.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ImageBuildError(f"pip {args[0]} failed: {proc.stderr.strip()[-1200:]}")


def prepare_wheels(ctx: Path, log: Callable[[str], None] = print) -> None:
    """Fill ctx/wheels/{deps,app}: wheels built on the host (the image build has no index to install from)."""
    cache = cache_dir() / f"wheels-py{sys.version_info.major}{sys.version_info.minor}"
    cache.mkdir(parents=True, exist_ok=True)
    reqs = _runtime_requirements()
    pip_version = importlib.metadata.version("pip")
    try:  # offline first: everything already in the cache
        _pip("wheel", "-q", "--no-index", "--find-links", str(cache), "--wheel-dir", str(cache), *reqs)
    except ImageBuildError:
        log(f"fetching dependency wheels into {cache}")
        _pip("wheel", "-q", "--find-links", str(cache), "--wheel-dir", str(cache), *reqs)
    pip_whl = next(iter(sorted(cache.glob(f"pip-{pip_version}-*.whl"))), None)
    if pip_whl is None:
        _pip("download", "-q", "--no-deps", "--dest", str(cache), f"pip=={pip_version}")
        pip_whl = next(iter(sorted(cache.glob(f"pip-{pip_version}-*.whl"))))
    deps, app = ctx / "wheels" / "deps", ctx / "wheels" / "app"
    deps.mkdir(parents=True)
    app.mkdir(parents=True)
    # Only the wheels the requirements resolve to (the cache may hold older versions too).
    resolved = tempfile.mkdtemp(prefix="aw-wheels-")
    try:
        _pip("wheel", "-q", "--no-index", "--find-links", str(cache), "--wheel-dir", resolved, *reqs)
        for whl in Path(resolved).glob("*.whl"):
            shutil.copy2(whl, deps / whl.name)
    finally:
        shutil.rmtree(resolved, ignore_errors=True)
    (deps / "requirements.txt").write_text("\n".join(reqs) + "\n")
    shutil.copy2(pip_whl, deps / "pip.whl")
    shutil.copy2(pip_whl, app / "pip.whl")
    with tempfile.TemporaryDirectory(prefix="aw-src-") as src_copy:
        # Build from a copy so the checkout gets no build/ or egg-info droppings.
        root = project_root()
        dst = Path(src_copy) / "src"
        dst.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, dst / name)
        for source_root in ("services", "controller"):  # both packages: agentworld and agentworld_controller
            shutil.copytree(root / source_root, dst / source_root,
                            ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"))
        _pip("wheel", "-q", "--no-deps", "--wheel-dir", str(app), str(dst))


def _prepare_router(ctx: Path, log: Callable[[str], None] = print) -> None:
    """ctx/bin/: agentworld-router (`make router`) when it is built, so the image's gateway forwards in Go."""
    from agentworld.gateway.router import BINARY, find_router

    (ctx / "bin").mkdir()
    binary = find_router()
    if binary is None:
        log("agentworld-router is not built (`make router`): the image's gateway will forward calls in Python")
        return
    shutil.copy2(binary, ctx / "bin" / BINARY)


class ImageBuilder:
    """Builds the runtime image and environment images against one Docker engine."""

    def __init__(
        self,
        client=None,
        *,
        base_image: str = BASE_IMAGE,
        runtime_image: str = RUNTIME_IMAGE,
        tag_prefix: str = DEFAULT_TAG_PREFIX,
        workers: int = 2,
        log: Callable[[str], None] = print,
    ) -> None:
        self.client = client or docker_client()
        self.base_image = base_image
        self.runtime_image = runtime_image
        self.tag_prefix = tag_prefix
        self.workers = max(1, workers)
        self.log = log
        self.runtime_id: str | None = None
        self.runtime_size = 0
        self._local = threading.local()

    # -- base and runtime -------------------------------------------------------------------------------------
    def ensure_base(self) -> str:
        """The base must be local: the local Debian-built one is made here, others must be loaded or pulled first."""
        import docker

        if self.base_image == BASE_IMAGE:
            return build_base_image(self.client, tag=BASE_IMAGE, log=self.log)
        try:
            return self.client.images.get(self.base_image).id
        except docker.errors.ImageNotFound as exc:
            raise ImageBuildError(
                f"base image {self.base_image} is not in the local engine; `docker pull` or `docker load` it first "
                f"(this builder never pulls), or use the registry-free default {BASE_IMAGE} (`make base-image`)"
            ) from exc

    def build_runtime(self) -> str:
        """Build the runtime image (layer-cached when wheels and Dockerfile are unchanged); returns its id."""
        import docker

        self.ensure_base()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="aw-runtime-") as tmp:
            ctx = Path(tmp)
            prepare_wheels(ctx, self.log)
            _prepare_router(ctx, self.log)
            shutil.copy2(dockerfiles_dir() / "runtime.Dockerfile", ctx / "Dockerfile")
            try:
                image, _ = self.client.images.build(
                    path=str(ctx), dockerfile="Dockerfile", tag=self.runtime_image, rm=True, forcerm=True,
                    pull=False, buildargs={"BASE_IMAGE": self.base_image},
                )
            except docker.errors.BuildError as exc:
                raise ImageBuildError(f"runtime image build failed: {exc.msg}\n{_tail_build_log(exc.build_log)}") from exc
        self.runtime_id = image.id
        self.runtime_size = int(image.attrs.get("Size", 0))
        self.log(f"runtime {self.runtime_image} {image.short_id} ({self.runtime_size / 1e6:.1f} MB, "
                 f"{time.monotonic() - t0:.1f}s)")
        return image.id

    def _thread_client(self):
        if not hasattr(self._local, "client"):
            self._local.client = docker_client()
        return self._local.client

    def _require_runtime(self) -> str:
        if self.runtime_id is None:
            import docker

            try:
                image = self.client.images.get(self.runtime_image)
            except docker.errors.ImageNotFound:
                return self.build_runtime()
            self.runtime_id, self.runtime_size = image.id, int(image.attrs.get("Size", 0))
        return self.runtime_id

    # -- environment images -----------------------------------------------------------------------------------
    def build_env(self, bundle_dir: Path, force: bool = False) -> EnvImage:
        """Build one environment image, or return the existing one when its content hash and runtime match."""
        import docker

        runtime_id = self._require_runtime()
        bundle = load_bundle(bundle_dir)
        content_hash = compute_content_hash(bundle)
        env_id = bundle.env_id
        ref = f"{image_name(env_id, self.tag_prefix)}:{_hash_tag(content_hash)}"
        client = self._thread_client()
        dockerfile = (dockerfiles_dir() / "env.Dockerfile").read_bytes()
        recipe = _recipe(dockerfile)
        if not force:
            try:
                existing = client.images.get(ref)
                if _up_to_date(existing, content_hash, runtime_id, recipe):
                    size = int(existing.attrs.get("Size", 0))
                    return EnvImage(env_id, ref, existing.id, content_hash, size, size - self.runtime_size,
                                    skipped=True, env_ids=[env_id])
            except docker.errors.ImageNotFound:
                pass
        files = {"Dockerfile": dockerfile}
        for name in ("env.json", *BUNDLE_FILES):
            files[f"bundles/{env_id}/{name}"] = (Path(bundle_dir) / name).read_bytes()
        buildargs = {
            "RUNTIME_IMAGE": self.runtime_image, "ENV_ID": env_id, "CONTENT_HASH": content_hash,
            "TITLE": bundle.manifest.title[:200], "DESCRIPTION": bundle.manifest.description[:500],
        }
        image = self._build(client, files, ref, buildargs, runtime_id, recipe)
        size = int(image.attrs.get("Size", 0))
        return EnvImage(env_id, ref, image.id, content_hash, size, size - self.runtime_size,
                        build_s=self._last_build_s(), env_ids=[env_id])

    def _build(self, client, files: dict[str, bytes], ref: str, buildargs: dict[str, str], runtime_id: str,
               recipe: str):
        import docker

        t0 = time.monotonic()
        try:
            image, _ = client.images.build(
                fileobj=_tar_context(files), custom_context=True, dockerfile="Dockerfile", tag=ref, rm=True,
                forcerm=True, pull=False, buildargs=buildargs,
                labels={LABEL_RUNTIME_ID: runtime_id, LABEL_RECIPE: recipe, LABEL_MANAGED: "true"},
            )
        except docker.errors.BuildError as exc:
            raise ImageBuildError(f"building {ref} failed: {exc.msg}\n{_tail_build_log(exc.build_log)}") from exc
        self._local.build_s = time.monotonic() - t0
        return image

    def _last_build_s(self) -> float:
        return getattr(self._local, "build_s", 0.0)

    def build_all(self, bundle_dirs: Iterable[Path], force: bool = False, progress: bool = True) -> list[EnvImage]:
        """Build every bundle's image with `workers` parallel builds and a progress bar; results in input order."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        dirs = [Path(d) for d in bundle_dirs]
        self._require_runtime()
        results: dict[Path, EnvImage] = {}
        with Progress(TextColumn("[bold]images[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), disable=not progress, transient=False) as bar:
            task = bar.add_task("", total=len(dirs))
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="aw-build") as pool:
                futures = {pool.submit(self.build_env, d, force): d for d in dirs}
                for fut in as_completed(futures):
                    res = fut.result()
                    results[futures[fut]] = res
                    bar.update(task, advance=1, description=f"{res.env_id} {'skipped' if res.skipped else 'built'}")
        return [results[d] for d in dirs]

    def build_suite(self, bundle_dirs: Iterable[Path], suite: str, force: bool = False) -> EnvImage:
        """One image serving many environments (every bundle under /bundles)."""
        import docker

        runtime_id = self._require_runtime()
        bundles = sorted((load_bundle(d) for d in bundle_dirs), key=lambda b: b.env_id)
        if not bundles:
            raise ImageBuildError("a suite image needs at least one bundle")
        combined = hashlib.sha256("\n".join(f"{b.env_id}={compute_content_hash(b)}" for b in bundles).encode())
        content_hash = "sha256:" + combined.hexdigest()
        env_ids = [b.env_id for b in bundles]
        ref = f"{image_name(suite, self.tag_prefix.replace('env-', 'suite-'))}:{_hash_tag(content_hash)}"
        client = self._thread_client()
        dockerfile = (dockerfiles_dir() / "suite.Dockerfile").read_bytes()
        recipe = _recipe(dockerfile)
        if not force:
            try:
                existing = client.images.get(ref)
                if _up_to_date(existing, content_hash, runtime_id, recipe):
                    size = int(existing.attrs.get("Size", 0))
                    return EnvImage(suite, ref, existing.id, content_hash, size, size - self.runtime_size, True,
                                    env_ids=env_ids)
            except docker.errors.ImageNotFound:
                pass
        files = {"Dockerfile": dockerfile}
        for b in bundles:
            for name in ("env.json", *BUNDLE_FILES):
                files[f"bundles/{b.env_id}/{name}"] = (Path(b.path) / name).read_bytes()
        buildargs = {"RUNTIME_IMAGE": self.runtime_image, "SUITE": suite, "ENV_IDS": ",".join(env_ids),
                     "CONTENT_HASH": content_hash}
        image = self._build(client, files, ref, buildargs, runtime_id, recipe)
        size = int(image.attrs.get("Size", 0))
        return EnvImage(suite, ref, image.id, content_hash, size, size - self.runtime_size,
                        build_s=self._last_build_s(), env_ids=env_ids)

    # -- registry -----------------------------------------------------------------------------------------------
    def push(self, images: list[EnvImage], registry: str) -> None:
        """Tag each image under `registry` and push it; records the pushed reference and its manifest digest."""
        registry = registry.rstrip("/")
        for img in images:
            repo, _, tag = img.image.rpartition(":")
            target = f"{registry}/{repo}"
            self.client.images.get(img.image_id).tag(target, tag)
            digest = None
            for line in self.client.api.push(target, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise ImageBuildError(f"push {target}:{tag} failed: {line['error']}")
                digest = (line.get("aux") or {}).get("Digest", digest)
            if digest is None:
                raise ImageBuildError(f"push {target}:{tag} reported no digest")
            img.pushed, img.digest = f"{target}:{tag}", digest


def _tail_build_log(build_log, lines: int = 15) -> str:
    out = [str(chunk.get("stream") or chunk.get("error") or "").rstrip() for chunk in build_log or []]
    return "\n".join(x for x in out if x)[-3000:] if out else ""


def write_index(images: list[EnvImage], path: Path, runtime_image: str | None = None,
                runtime_id: str | None = None) -> Path:
    """env id -> image, digest, size: what the controller and Helm chart read. Merges with an existing index."""
    path = Path(path)
    data: dict = {"format_version": 1, "envs": {}, "suites": {}}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            data["envs"].update(old.get("envs", {}))
            data["suites"].update(old.get("suites", {}))
        except (json.JSONDecodeError, AttributeError):
            pass
    if runtime_image:
        data["runtime"] = {"image": runtime_image, "image_id": runtime_id}
    for img in images:
        entry = {k: v for k, v in asdict(img).items() if k not in ("skipped", "build_s", "env_id")}
        entry["image"] = img.pushed or img.image
        entry["local_image"] = img.image
        if len(img.env_ids) == 1 and img.env_ids[0] == img.env_id:
            entry.pop("env_ids")
            data["envs"][img.env_id] = entry
        else:
            data["suites"][img.env_id] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def prune_superseded_images(client, runtime_image: str = RUNTIME_IMAGE) -> int:
    """Remove environment/suite images built on a runtime image other than the current one (disk hygiene)."""
    import docker

    current = client.images.get(runtime_image).id
    removed = 0
    for image in client.images.list(filters={"label": f"{LABEL_MANAGED}=true"}):
        runtime_id = (image.labels or {}).get(LABEL_RUNTIME_ID)
        if runtime_id and runtime_id != current:
            try:
                client.images.remove(image.id, force=True)
                removed += 1
            except docker.errors.APIError:  # still used by a container
                pass
    return removed
