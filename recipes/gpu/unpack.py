"""Put what a GPU lease brought back in place: lease.tar parts -> lease/, then the models where the recipes expect them.

    python recipes/gpu/unpack.py /work/.device/1 /work/.device/3     # folders holding *.tar.part-* files, in order

MT: models/mt/{finetune,both}.safetensors as they came; models/mt/{regular,distillation}.safetensors re-joined from
the baseline's weights and the heads that came back alone; models/mt/teacher_targets.tsv.gz; models/mt_<name>/
(mt_chain, mt_self, ...) as they came, heads alone re-joined with the baseline. SR: runs/sr/x<factor>/<stage>/ (a
Regular stage that came back as heads.safetensors alone is re-joined with its base).
Learning curves and logs are copied to results/<task>/training/h200/ so that the tables can cite them.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from blockwise.model.blockwise_model import join_heads


def main(folders: list[str]) -> int:
    for folder in folders:
        parts = sorted(Path(folder).glob("*.tar.part-*"))
        if not parts:
            print(f"no *.tar.part-* files in {folder}", file=sys.stderr)
            return 1
        cat = subprocess.Popen(["cat", *map(str, parts)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "xf", "-"], stdin=cat.stdout, check=True)
        cat.wait()
    lease, models = Path("lease"), Path("models/mt")
    models.mkdir(parents=True, exist_ok=True)
    for regime in ("finetune", "both"):
        if (lease / "models/mt" / f"{regime}.safetensors").exists():
            shutil.copy(lease / "models/mt" / f"{regime}.safetensors", models / f"{regime}.safetensors")
    for regime in ("regular", "distillation"):
        heads = lease / "models/mt" / f"{regime}.heads.safetensors"
        if not heads.exists():
            continue
        join_heads(models / "baseline.safetensors", heads, models / f"{regime}.safetensors")
    if (lease / "models/mt/teacher_targets.tsv.gz").exists():
        shutil.copy(lease / "models/mt/teacher_targets.tsv.gz", models / "teacher_targets.tsv.gz")
    for folder in (lease / "models").glob("mt_*"):  # mt_chain, mt_self, ...: as they came, heads alone re-joined
        dest = Path("models") / folder.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in folder.glob("*"):
            shutil.copy(f, dest / f.name)
            if f.name.endswith(".heads.safetensors"):
                join_heads(models / "baseline.safetensors", f, dest / f.name.replace(".heads", ""))
    stages = [Path("runs/sr") / d.relative_to(lease / "runs/sr") for d in (lease / "runs/sr").glob("x*/*")]
    for dest in stages:
        shutil.copytree(lease / "runs/sr" / dest.relative_to("runs/sr"), dest, dirs_exist_ok=True)
    for dest in stages:  # every base is in place before a Regular stage is re-joined with it
        if (dest / "heads.safetensors").exists():
            base = dest.parent / "base" / "model.safetensors"
            join_heads(base, dest / "heads.safetensors", dest / "model.safetensors")
    results_of = {"mt": "results/mt/training/h200", "sr": "results/sr/training/h200"}
    results_of |= {d.name: f"results/mt/{d.name[3:]}/lease" for d in (lease / "runs").glob("mt_*")}
    for task, results in results_of.items():
        for log in (lease / "runs" / task).rglob("*.jsonl"):
            dest = Path(results) / log.relative_to(lease / "runs" / task)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, dest)
    print("\n".join(sorted(str(p) for p in models.glob("*"))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
