"""The product images without Docker or a registry: the operator, the compat-probe and the reference model server.

``operator/Dockerfile`` and ``operator/compat_probe/Dockerfile`` describe them for users with Docker: a Debian
(bookworm) root filesystem with Python 3.11, a venv at ``/opt/venv`` holding the package (``pip install .`` of
pyproject.toml, README.md, operator/modelrollout and operator/compat_probe) and its dependencies from PyPI, user
65532, ``HOME=TMPDIR=/tmp``. This builds the same thing from the repository for the real node
(devenv.localenv.node), with Debian's tools only:

- the base layer: ``mmdebstrap --variant=minbase`` of bookworm from the mirror apt uses here, plus ``python3``,
  ``python3-venv`` and ``ca-certificates`` (Debian's Python 3.11 where the Dockerfiles use the python:3.11-slim
  image, which is bookworm with a Python built from source in /usr/local), and the user ``nonroot`` (65532)
  that the Dockerfiles add;
- the venv layer: the wheel built from a copy of exactly what the Dockerfiles COPY, its dependencies downloaded
  from PyPI as cp311 manylinux wheels, installed offline into ``/opt/venv`` inside the base (``chroot``); pip
  byte-compiles the modules at build time, as in the Dockerfiles;
- three images sharing both layers (the two Dockerfiles install the same package; the images differ in their
  config only): ``modelrollout`` (entrypoint ``modelrollout run``), ``modelrollout-compat-probe``
  (``compat-probe``) and ``modelrollout-refserver`` (``python -m compat_probe.refserver``, the reference model
  server of the tests and the demo, listening on 0.0.0.0:8080 by default), written as one docker-archive
  (``docker save`` format: each layer stored once) that ``ctr images import`` loads.

Cached under ``${MODELROLLOUT_CACHE:-~/.cache/modelrollout}/node-images``: the base layer is keyed by its recipe
(suite, packages, apt sources), the archive by a hash of the base key and every input file, which is also the
images' tag; each is rebuilt only when its key changes. Needs root (mmdebstrap, chroot) and ``mmdebstrap``
(hack/bootstrap.sh installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devenv.localenv.controlplane import repo_root

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_RECIPE = "2"  # bump when the way the base layer is built changes
APP_RECIPE = "1"  # bump when the way the venv layer or the image configs are built changes
PYTHON_VERSION = "3.11"  # bookworm's python3, and the Dockerfiles' python:3.11-slim
# What the Dockerfiles COPY into the build stage (the wheel's inputs), relative to the repository root.
PACKAGE_INPUTS = ("pyproject.toml", "README.md", "operator/modelrollout", "operator/compat_probe")
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
# Paths of the base rootfs that a runtime provides (mounts) or that only the build used: not in the layer.
BASE_EXCLUDES = ("./dev/*", "./proc/*", "./sys/*", "./run/*", "./tmp/*", "./var/cache/apt/*",
                 "./var/lib/apt/lists/*", "./var/log/*", "./etc/resolv.conf", "./etc/hostname")
# The Dockerfiles' ENV (and python:3.11-slim's LANG).
ENV = ("PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
       "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp", "TMPDIR=/tmp")
USER = "65532:65532"
ADD_USER = ("groupadd --system --gid 65532 nonroot && useradd --system --uid 65532 --gid 65532 --home-dir /tmp "
            "--no-create-home --shell /usr/sbin/nologin nonroot")  # as in the Dockerfiles' final stage
BUILD_TIMEOUT = 1200.0
KEEP = 3  # archives kept in the cache (newest first; clones on one machine at different commits share it)


@dataclass(frozen=True)
class ImageSpec:
    name: str  # the repository part of the reference, under localhost/
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    dockerfile: str = ""  # the Dockerfile describing it for Docker users ("" : see docs/install.md)


IMAGES = {
    "operator": ImageSpec("localhost/modelrollout", ("modelrollout", "run"), ports=(9090, 8080),
                          dockerfile="operator/Dockerfile"),
    "compat-probe": ImageSpec("localhost/modelrollout-compat-probe", ("compat-probe",), ports=(9109,),
                              dockerfile="operator/compat_probe/Dockerfile"),
    # The compat-probe image run as `python -m compat_probe.refserver` (the same package ships the server).
    "refserver": ImageSpec("localhost/modelrollout-refserver", ("python", "-m", "compat_probe.refserver"),
                           cmd=("--host", "0.0.0.0", "--port", "8080"), ports=(8080,)),
}


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImages:
    archive: Path  # one docker-archive holding every image
    refs: dict[str, str]  # {"operator": "localhost/modelrollout:TAG", ...}
    tag: str
    seconds: float  # build time (0 when it came from the cache)


def cache_dir() -> Path:
    return Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout") / "node-images"


def _hash(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def apt_sources() -> Path | None:
    return next((p for p in APT_SOURCES if p.is_file()), None)


def base_key() -> str:
    sources = apt_sources()
    return _hash([SUITE.encode(), " ".join(BASE_PACKAGES).encode(), BASE_RECIPE.encode(),
                  sources.read_bytes() if sources else b"default mirror"])


def input_files(root: Path | None = None) -> list[Path]:
    """The files the wheel is built from (what the Dockerfiles COPY), sorted, caches left out."""
    root = root or repo_root()
    files: list[Path] = []
    for rel in PACKAGE_INPUTS:
        p = root / rel
        if p.is_file():
            files.append(p)
            continue
        files += [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                  and f.suffix not in (".pyc", ".pyo")]
    return sorted(files)


def app_key(root: Path | None = None) -> str:
    root = root or repo_root()
    parts = [base_key().encode(), APP_RECIPE.encode(), PYTHON_VERSION.encode(),
             json.dumps({k: [s.name, *s.entrypoint, "|", *s.cmd] for k, s in IMAGES.items()}).encode()]
    for f in input_files(root):
        parts += [str(f.relative_to(root)).encode(), f.read_bytes()]
    return _hash(parts)


def refs(tag: str) -> dict[str, str]:
    return {key: f"{spec.name}:{tag}" for key, spec in IMAGES.items()}


def missing_tools() -> list[str]:
    return [t for t in ("mmdebstrap", "chroot", "tar") if shutil.which(t) is None]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache (a second waits, then finds the artifact built)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: Sequence[str], *, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = BUILD_TIMEOUT) -> None:
    """Run a build step at the lowest CPU priority, its output appended to ``log``."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        res = subprocess.run(["nice", "-n", "19", *argv], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                             timeout=timeout, check=False)
    if res.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise ImageBuildError(f"{argv[0]} failed (exit {res.returncode}); {log}:\n{tail}")


def _layer_tar(rootfs: Path, out: Path, members: Sequence[str], excludes: Sequence[str], log: Path) -> None:
    tmp = out.with_suffix(".tmp")
    _run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", str(rootfs), "-cf", str(tmp),
          *[f"--exclude={e}" for e in excludes], *members], log=log)
    tmp.replace(out)


def build_base(log: Path | None = None) -> Path:
    """The base layer (Debian minbase + Python) as an uncompressed tar in the cache; built once per key."""
    cache = cache_dir()
    key = base_key()
    out = cache / f"python-base-{key}.tar"
    with _locked(cache / ".base.lock"):
        if out.is_file():
            return out
        work = cache / f"python-base-{key}.build"
        _remove_tree(work)
        work.mkdir(parents=True)
        log = log or work.parent / f"python-base-{key}.log"
        log.write_text("")
        rootfs = work / "rootfs"
        sources = apt_sources()
        _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(BASE_PACKAGES),
              "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
              "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
              SUITE, str(rootfs), *([str(sources)] if sources else [])], log=log)
        # mmdebstrap mounts /proc, /sys and /dev in the target while it runs and unmounts them at the end.
        _check_no_mounts(work)
        # the user the images run as, named, as the Dockerfiles add it (getpass.getuser() needs it)
        _run(["chroot", str(rootfs), "/bin/sh", "-c", ADD_USER], log=log,
             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        members = sorted(p.name for p in rootfs.iterdir())
        _layer_tar(rootfs, out, members, BASE_EXCLUDES, log)
        _remove_tree(work)
        return out


def build_images(log: Path | None = None) -> BuiltImages:
    """The operator, compat-probe and refserver images as one docker-archive in the cache (built once per
    input hash, which is their tag)."""
    started = time.monotonic()
    cache = cache_dir()
    root = repo_root()
    tag = app_key(root)
    archive = cache / f"modelrollout-images-{tag}.tar"
    if archive.is_file():
        return BuiltImages(archive, refs(tag), tag, 0.0)
    base = build_base()
    with _locked(cache / ".app.lock"):
        if archive.is_file():
            return BuiltImages(archive, refs(tag), tag, 0.0)
        work = cache / f"modelrollout-images-{tag}.build"
        _remove_tree(work)
        work.mkdir(parents=True)
        log = log or cache / f"modelrollout-images-{tag}.log"
        log.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")

        # the wheel, from a copy of what the Dockerfiles COPY (a build writes build/ and *.egg-info)
        src = work / "src"
        for rel in PACKAGE_INPUTS:
            s = root / rel
            if s.is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, src / rel)
            else:
                shutil.copytree(s, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        wheels = work / "wheels"
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
              str(src)], log=log, env=env)
        wheel = next(wheels.glob("modelrollout-*.whl"))
        # its dependencies from PyPI, as wheels for the image's Python (whatever Python runs this)
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--implementation", "cp",
              "--python-version", PYTHON_VERSION, "--platform", "manylinux_2_36_x86_64", "--platform",
              "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64",
              "-d", str(wheels), str(wheel)], log=log, env=env)

        # the venv, installed offline inside the base rootfs
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-xf", str(base)], log=log)
        shutil.copytree(wheels, rootfs / "tmp" / "wheels")
        chroot_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                      "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "PIP_NO_INDEX": "1"}
        _run(["chroot", str(rootfs), "/bin/sh", "-c",
              "python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --find-links /tmp/wheels "
              "modelrollout && /opt/venv/bin/pip freeze > /tmp/freeze.txt"], log=log, env=chroot_env)
        freeze = (rootfs / "tmp" / "freeze.txt").read_text()
        (cache / f"modelrollout-images-{tag}.freeze.txt").write_text(freeze)
        app_tar = work / "venv.tar"
        _layer_tar(rootfs, app_tar, ["opt"], (), log)

        tmp = archive.with_suffix(".tmp")
        write_docker_archive(tmp, [base, app_tar], refs(tag), freeze)
        tmp.replace(archive)
        _remove_tree(work)
        prune(keep=KEEP)
    return BuiltImages(archive, refs(tag), tag, time.monotonic() - started)


def prune(keep: int = KEEP) -> list[Path]:
    """Remove all but the ``keep`` newest image archives (each ~400 MB) and bases no longer used; returns what
    went."""
    cache = cache_dir()
    archives = sorted(cache.glob("modelrollout-images-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    gone = [a for a in archives[keep:]]
    current_base = cache / f"python-base-{base_key()}.tar"
    gone += [b for b in cache.glob("python-base-*.tar") if b != current_base]
    for path in gone:
        for f in (path, path.with_suffix(".log"), path.with_suffix(".freeze.txt")):
            f.unlink(missing_ok=True)
    return gone


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def image_config(spec: ImageSpec, diff_ids: Sequence[str], created: str, freeze: str = "") -> dict[str, object]:
    """The image config (OCI image spec / Docker v1.2) of ``spec`` over layers ``diff_ids``."""
    config: dict[str, object] = {"Env": list(ENV), "Entrypoint": list(spec.entrypoint), "WorkingDir": "/tmp",
                                 "User": USER, "ExposedPorts": {f"{p}/tcp": {} for p in spec.ports},
                                 "Labels": {"io.modelrollout.built-by": "devenv.localenv.images",
                                            "io.modelrollout.dockerfile": spec.dockerfile or "none"}}
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": created, "created_by": f"mmdebstrap --variant=minbase {SUITE} + {' '.join(BASE_PACKAGES)}"},
            {"created": created, "created_by": "python3 -m venv /opt/venv && pip install modelrollout "
             f"({len(freeze.splitlines())} packages)"},
        ],
    }


def write_docker_archive(out: Path, layers: Sequence[Path], image_refs: dict[str, str], freeze: str = "") -> None:
    """A ``docker save`` archive: every image of ``image_refs`` over the same ``layers`` (stored once)."""
    diff_ids = [f"sha256:{_sha256_file(layer)}" for layer in layers]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = []
    with tarfile.open(out, "w") as tar:
        names = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
            tar.add(str(layer), arcname=name)
            names.append(name)
        for key, ref in image_refs.items():
            body = json.dumps(image_config(IMAGES[key], diff_ids, created, freeze), sort_keys=True).encode()
            cfg_name = f"{hashlib.sha256(body).hexdigest()}.json"
            info = tarfile.TarInfo(cfg_name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
            manifest.append({"Config": cfg_name, "RepoTags": [ref], "Layers": names})
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def _check_no_mounts(path: Path) -> None:
    left = _mounts_under(path)
    if left:
        raise ImageBuildError(f"mounts left under {path}: {left}")


def _remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (a failed build could leave one)."""
    if not path.exists():
        return
    _check_no_mounts(path)
    shutil.rmtree(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.localenv.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "key"), help="build: build (or find) the images; key: their tag")
    args = parser.parse_args(argv)
    if args.command == "key":
        print(app_key())
        return 0
    missing = missing_tools()
    if missing:
        print(f"images: {', '.join(missing)} not found (hack/bootstrap.sh installs them)", file=sys.stderr)
        return 1
    built = build_images()
    size = built.archive.stat().st_size / 1e6
    how = f"built in {built.seconds:.0f}s" if built.seconds else "cached"
    print(f"images {how}: {built.archive} ({size:.0f} MB)", file=sys.stderr)
    for ref in built.refs.values():
        print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
