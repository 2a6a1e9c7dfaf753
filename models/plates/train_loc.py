"""Trains the plate localiser (a small fully convolutional net giving a plate mask at half its
input's resolution) and exports it to ONNX.

    python3 models/plates/train_loc.py --data DIR --out models/plate_loc.onnx

Input: `x` float32 [N, 3, H, W], RGB scaled to [0, 1]; the appliance feeds the frame resized to
640x360. Output: `mask` float32 [N, 1, H/2, W/2], the probability that a pixel is plate.
"""

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(i, o, stride=1, dil=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, padding=dil, dilation=dil, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class Localiser(nn.Module):
    """Strided convolutions down to 1/8 with dilated context (a plate and its surroundings),
    then back up through skips at 1/4 and 1/2 so the mask's edges land within a few pixels."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 12, 2)       # stride 2: the fine skip
        self.c2 = cbr(12, 24, 2)      # stride 4
        self.c3 = cbr(24, 40, 2)      # stride 8
        self.c4 = cbr(40, 40, dil=2)
        self.c5 = cbr(40, 40, dil=4)
        self.fuse4 = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.fuse2 = nn.Sequential(nn.Conv2d(28, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        s2 = self.c1(x)
        s4 = self.c2(s2)
        d = self.c5(self.c4(self.c3(s4)))
        u = F.interpolate(d, size=s4.shape[2:], mode="bilinear", align_corners=False)
        u = self.fuse4(torch.cat([u, s4], 1))
        u = F.interpolate(u, size=s2.shape[2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse2(torch.cat([u, s2], 1)))


class Exported(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return torch.sigmoid(self.m(x))


def masks(quads_json, h, w):
    out = np.zeros((len(quads_json), 1, h // 2, w // 2), np.float32)
    for i, qj in enumerate(quads_json):
        for q in json.loads(str(qj)):
            m = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(m, np.array(q, np.float32).round().astype(np.int32), 255)
            out[i, 0] = np.maximum(out[i, 0], cv2.resize(m, (w // 2, h // 2), interpolation=cv2.INTER_AREA) / 255.0)
    return out


def to_tensor(x):
    return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--init", help="start from these weights (a .pt this script saved)")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    tr = np.load(os.path.join(a.data, "loc_train.npz"))
    va = np.load(os.path.join(a.data, "loc_val.npz"))
    x = tr["x"]
    n, h, w, _ = x.shape
    y = masks(tr["quads"], h, w)
    vx, vy = to_tensor(va["x"]), torch.from_numpy(masks(va["quads"], h, w))
    model = Localiser()
    if a.init:
        model.load_state_dict(torch.load(a.init))
    print("parameters", sum(p.numel() for p in model.parameters()), file=sys.stderr)
    steps = a.epochs * (n // a.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.1)
    c = a.crop
    step, t0 = 0, time.time()
    for epoch in range(a.epochs):
        model.train()
        order = rng.permutation(n)
        for i in range(0, n - a.batch + 1, a.batch):
            b = order[i:i + a.batch]
            # Random crops (multiples of 8) keep training cheap; the net is fully convolutional.
            ys = rng.integers(0, (h - c) // 8 + 1) * 8 if h > c else 0
            xs = rng.integers(0, (w - c) // 8 + 1) * 8
            ch = min(c, h)
            xb = to_tensor(x[b, ys:ys + ch, xs:xs + c])
            if rng.random() < 0.5:
                xb = xb * float(rng.uniform(0.5, 1.2))
            yb = torch.from_numpy(y[b, :, ys // 2:(ys + ch) // 2, xs // 2:(xs + c) // 2])
            logit = model(xb)
            pr = torch.sigmoid(logit)
            dice = 1 - (2 * (pr * yb).sum() + 1) / (pr.sum() + yb.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logit, yb, pos_weight=torch.tensor(3.0)) + dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print("step %d/%d loss %.3f %.0f samples/s" % (step, steps, loss.item(), step * a.batch / (time.time() - t0)), file=sys.stderr, flush=True)
        model.eval()
        with torch.no_grad():
            pr = torch.cat([torch.sigmoid(model(vx[i:i + 32])) for i in range(0, len(vx), 32)])
        inter = ((pr > 0.5) & (vy > 0.5)).sum().item()
        union = ((pr > 0.5) | (vy > 0.5)).sum().item()
        print("epoch %d val IoU %.3f" % (epoch, inter / max(1, union)), file=sys.stderr, flush=True)
        torch.save(model.state_dict(), a.out + ".pt")
    model.eval()
    torch.onnx.export(Exported(model), torch.zeros(1, 3, 360, 640), a.out, input_names=["x"], output_names=["mask"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "mask": {0: "n", 2: "mh", 3: "mw"}},
                      opset_version=17, dynamo=False)
    print("wrote", a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
