"""devenv.localenv.images without building anything: the cache key, the archive format, the Dockerfile equivalence."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

from devenv.localenv import images

ROOT = Path(__file__).resolve().parents[2]


def _copy_inputs(dst: Path) -> Path:
    for rel in (*images.PACKAGE_INPUTS, "operator/devenv/__init__.py"):
        src = ROOT / rel
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copy2(src, dst / rel)
        else:
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_the_tag_changes_with_the_package_inputs_only(tmp_path: Path) -> None:
    root = _copy_inputs(tmp_path)
    key = images.app_key(root)
    assert images.app_key(root) == key and re.fullmatch(r"[0-9a-f]{16}", key)
    (root / "operator" / "devenv" / "__init__.py").write_text("# not in the images\n")
    (root / "operator" / "modelrollout" / "__pycache__").mkdir(exist_ok=True)
    (root / "operator" / "modelrollout" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert images.app_key(root) == key
    plan = root / "operator" / "modelrollout" / "api.py"
    plan.write_text(plan.read_text() + "\n# changed\n")
    assert images.app_key(root) != key


def _dockerfile(rel: str) -> dict[str, object]:
    """ENTRYPOINT, USER and ENV of a Dockerfile's final stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / rel).read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    env = dict(kv.split("=", 1) for ln in final if ln.startswith("ENV ") for kv in ln[4:].split())
    return {"entrypoint": json.loads(next(ln[11:] for ln in final if ln.startswith("ENTRYPOINT "))),
            "user": next(ln[5:] for ln in final if ln.startswith("USER ")),
            "env": env, "workdir": next(ln[8:] for ln in final if ln.startswith("WORKDIR "))}


def test_one_archive_three_images_two_shared_layers_configured_as_the_dockerfiles(tmp_path: Path) -> None:
    layers = []
    for name in ("base", "venv"):
        layer = tmp_path / f"{name}.tar"
        with tarfile.open(layer, "w") as t:
            f = tmp_path / name
            f.write_text(name)
            t.add(str(f), arcname=name)
        layers.append(layer)
    out = tmp_path / "images.tar"
    refs = images.refs("0123456789abcdef")
    images.write_docker_archive(out, layers, refs, "a==1\nb==2\n")
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        configs = {m["RepoTags"][0]: json.load(t.extractfile(m["Config"])) for m in manifest}  # type: ignore[arg-type]
        names = t.getnames()
    assert sorted(ref for m in manifest for ref in m["RepoTags"]) == sorted(refs.values())
    assert len({tuple(m["Layers"]) for m in manifest}) == 1 and len(manifest[0]["Layers"]) == 2
    assert sum(n.endswith("layer.tar") for n in names) == 2, "each layer stored once"

    for key, rel in (("operator", "operator/Dockerfile"), ("compat-probe", "operator/compat_probe/Dockerfile")):
        want = _dockerfile(rel)
        cfg = configs[refs[key]]["config"]
        assert cfg["Entrypoint"] == want["entrypoint"]
        assert cfg["User"] == want["user"] == images.USER
        assert cfg["WorkingDir"] == want["workdir"]
        env = dict(e.split("=", 1) for e in cfg["Env"])
        for k, v in want["env"].items():  # type: ignore[attr-defined]
            assert env[k] == v.replace("$PATH", env["PATH"].split(":", 1)[1]), k
        assert configs[refs[key]]["rootfs"]["diff_ids"][0].startswith("sha256:")
    refserver = configs[refs["refserver"]]["config"]
    assert refserver["Entrypoint"] == ["python", "-m", "compat_probe.refserver"]
    assert refserver["Cmd"][:2] == ["--host", "0.0.0.0"]


def test_the_dockerfiles_add_the_same_user_as_the_local_base() -> None:
    for rel in ("operator/Dockerfile", "operator/compat_probe/Dockerfile"):
        text = re.sub(r"\\\n\s*", " ", (ROOT / rel).read_text())
        assert images.ADD_USER.split(" && ")[1] in " ".join(text.split())
