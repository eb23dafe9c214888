"""Diagnostic: does the contrastive step help when its pixel labels are right?"""
import numpy as np, torch, time
import torch.nn.functional as Fn
from skanomclust import AnomalyWeightedPooling, ContrastiveRefiner, WardClustering
from skanomclust.datasets import load_texture_folder
from skanomclust.metrics import clustering_report
d = load_texture_folder("../shared/data/mtd/magnetic_tile")
y = np.asarray(d.target)
F = np.load("/tmp/mtd_6_10_13_256.npy")
masks = np.zeros((len(y), 32, 32), np.float32)
for i, m in enumerate(d.masks):
    if m is not None and m.any():
        t = torch.from_numpy(np.asarray(m, np.float32))[None, None]
        masks[i] = Fn.adaptive_max_pool2d(t, (32, 32))[0, 0].numpy()
rng = np.random.default_rng(0)
oracle = masks + rng.random(masks.shape, dtype=np.float32) * 0.01
M = np.concatenate([F, oracle[:, None]], 1); del F
def rep(name, D):
    r = clustering_report(y, WardClustering(6).fit_predict(D)); m5 = y > 0
    r5 = clustering_report(y[m5], WardClustering(5).fit_predict(D[m5]))
    print(f"{name}: 6c NMI {r['nmi']:.3f} ARI {r['ari']:.3f} F1 {r['f1']:.3f} | 5c NMI {r5['nmi']:.3f} ARI {r5['ari']:.3f}", flush=True)
print("images with mask pixels:", int((masks.reshape(len(y), -1).max(1) > 0).sum()))
rep("oracle maps, pool, no gate", AnomalyWeightedPooling(gate=None).fit_transform(M))
rep("oracle maps, pool, gate", AnomalyWeightedPooling(gate=0.5).fit_transform(M))
for gate in (False, True):
    t = time.time(); E = ContrastiveRefiner(threshold=0.5, gate=gate, random_state=0).fit_transform(M)
    rep(f"oracle maps, contrastive, gate={gate} ({time.time()-t:.0f}s)", E)
