"""Builds the training and validation arrays from `synth.py` on every core.

    python3 models/plates/dataset.py ocr --split train --n 60000 --out DIR/ocr_train.npz
    python3 models/plates/dataset.py loc --split train --n 6000 --out DIR/loc_train.npz

`ocr`: 32x192 grey crops and their texts. `loc`: 640x360 scenes (drawn at that size) and the
plate quadrilaterals. Sample i of a split always comes from seed offset(split) + i; `--first`
starts later, for fresh samples that do not repeat an earlier set's.
"""

import argparse
import json
import multiprocessing as mp
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402


def ocr_one(args):
    split, i, cn_share, double_share = args
    rng = np.random.default_rng(synth.SPLITS[split][0] + i)
    return synth.ocr_sample(rng, split, cn_share, double_share)


def loc_one(args):
    split, i = args
    rng = np.random.default_rng(synth.SPLITS[split][0] + 5_000_000 + i)
    img, plates = synth.scene(rng, split, w=640, h=360, scale=0.5)
    return img, [p["quad"] for p in plates]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["ocr", "loc"])
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--first", type=int, default=0, help="seed index of the first sample (a later range is fresh data)")
    p.add_argument("--cn-share", type=float, default=0.32, help="ocr: share of Chinese plates")
    p.add_argument("--double-share", type=float, default=0.25, help="ocr: share of double-row plates")
    a = p.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with mp.Pool() as pool:
        fn = ocr_one if a.kind == "ocr" else loc_one
        extra = (a.cn_share, a.double_share) if a.kind == "ocr" else ()
        res = pool.map(fn, [(a.split, i) + extra for i in range(a.first, a.first + a.n)], chunksize=64)
    if a.kind == "ocr":
        np.savez_compressed(a.out, x=np.stack([r[0] for r in res]), text=np.array([r[1] for r in res]), country=np.array([r[2] for r in res]))
    else:
        np.savez_compressed(a.out, x=np.stack([r[0] for r in res]), quads=np.array([json.dumps(r[1]) for r in res]))
    print("%d %s samples in %s" % (a.n, a.kind, a.out), file=sys.stderr)


if __name__ == "__main__":
    main()
