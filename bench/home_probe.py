"""Probe student recipes on a home that `bench/quality.py` trained: its own teacher, distillation rows and split.

    .venv/bin/python bench/home_probe.py HOME NEW_ROWS [key=value ...]
    .venv/bin/python bench/home_probe.py /tmp/qbench8/digits 20000 threads=1

HOME is one data set's home under quality.py's `--work` folder (its name is the data set's).
NEW_ROWS rows between the teacher's graph neighbours are added, labelled by `teacher.transform`
(0 for none). The key=value overrides are `StudentConfig` fields. Prints the scores on the test
rows, which no model saw, as one JSON line.
"""
import sys, json, time, dataclasses
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent)); sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import quality, student_probe
from umap_assets.home import Layout
from umap_assets.model_store import ModelStore
from umap_assets.numerics.distill import StudentConfig, neighbour_mixup, train_student
home = sys.argv[1]; fill = int(sys.argv[2]); kw = student_probe.parse_overrides(sys.argv[3:])
name = home.rstrip('/').split('/')[-1]
X_tr, y_tr, X_te, y_te = quality.split(name)
from umap_assets.history import newest_versions
v = newest_versions(Layout.at(home).dagster_home)
s = ModelStore(Layout.at(home)); p = s.student(v['student']); t = s.teacher(v['teacher'])
ids = np.array([int(u.split('/')[1]) for u in p.uids])
X, Y = X_tr[ids].astype(np.float32), p.targets.astype(np.float32)
if fill > 0:
    Xa = neighbour_mixup(X[:t.graph.shape[0]], t.graph, fill, seed=0)
    st = time.time(); Ya = t.transform(Xa).astype(np.float32); lab = time.time() - st
    X, Y = np.concatenate([X, Xa]), np.concatenate([Y, Ya])
else:
    lab = 0
cfg = dataclasses.replace(StudentConfig(), **kw)
st = time.time()
r = train_student(X, Y, t.fuzzy_graph, cfg)
knn = np.arange(len(X_tr))
res = quality.score(r.transform(X_te), X_te, y_te, r.transform(X_tr), y_tr)
out = {"home": name, "fill": fill, **kw, "label_s": round(lab), "train_s": round(time.time() - st), **{k: round(v, 4) for k, v in res.items()}}
print(json.dumps(out), flush=True)
