"""Trains the plate recogniser (a small CRNN read out with CTC) and exports it to ONNX.

    python3 models/plates/train_ocr.py --data DIR --out models/plate_ocr.onnx

Input: `x` float32 [N, 1, 32, 192], grey scaled to [-1, 1] (see `synth.ocr_input`).
Output: `probs` float32 [N, 48, 1 + len(CHARSET)], softmax over class 0 (CTC blank) and the
characters of `synth.CHARSET`, one row per 4-pixel column of the input.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402

NCLASS = 1 + len(synth.CHARSET)


def block(i, o):
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


class CRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            *block(1, 24), nn.MaxPool2d(2),            # 16 x 96
            *block(24, 48), nn.MaxPool2d(2),           # 8 x 48
            *block(48, 96), *block(96, 96), nn.MaxPool2d((2, 1)),  # 4 x 48
            *block(96, 128), nn.MaxPool2d((4, 1)),     # 1 x 48
        )
        self.seq = nn.Sequential(nn.Conv1d(128, 160, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(0.1),
                                 nn.Conv1d(160, 160, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Conv1d(160, NCLASS, 1)

    def forward(self, x):
        f = self.cnn(x).squeeze(2)          # N, C, T
        return self.head(self.seq(f)).permute(0, 2, 1)  # N, T, K logits


class Exported(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return F.softmax(self.m(x), dim=2)


def encode(texts):
    idx = {c: i + 1 for i, c in enumerate(synth.CHARSET)}
    targets = [torch.tensor([idx[c] for c in t]) for t in texts]
    return torch.cat(targets), torch.tensor([len(t) for t in targets])


def decode(logits):
    best = logits.argmax(2).numpy()
    out = []
    for row in best:
        s, prev = [], 0
        for k in row:
            if k != prev and k != 0:
                s.append(synth.CHARSET[k - 1])
            prev = k
        out.append("".join(s))
    return out


def to_tensor(x):
    return torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def augment(x, rng):
    """Cheap extra variety on top of the generator: contrast, brightness, inversion-free shifts."""
    x = x.astype(np.float32)
    n = len(x)
    a = rng.uniform(0.6, 1.3, (n, 1, 1))
    b = rng.uniform(-40, 40, (n, 1, 1))
    x = np.clip(x * a + b, 0, 255)
    shift = rng.integers(-3, 4, n)
    for i in np.nonzero(shift)[0]:
        x[i] = np.roll(x[i], shift[i], axis=1)
    return x


def evaluate(model, x, texts, countries):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), 512):
            preds += decode(model(to_tensor(x[i:i + 512])))
    ok = np.array([p == t for p, t in zip(preds, texts)])
    per = {c: float(ok[countries == c].mean()) for c in synth.COUNTRIES}
    return float(ok.mean()), per


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--init", help="start from these weights (a .pt this script saved)")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    tr = np.load(os.path.join(a.data, "ocr_train.npz"))
    va = np.load(os.path.join(a.data, "ocr_val.npz"))
    x, texts = tr["x"], tr["text"]
    model = CRNN()
    if a.init:
        model.load_state_dict(torch.load(a.init))
    print("parameters", sum(p.numel() for p in model.parameters()), file=sys.stderr)
    steps = a.epochs * (len(x) // a.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.15)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    step, t0 = 0, time.time()
    for epoch in range(a.epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order) - a.batch + 1, a.batch):
            b = order[i:i + a.batch]
            xb = to_tensor(augment(x[b], rng))
            tg, tl = encode(texts[b])
            logp = F.log_softmax(model(xb), 2).permute(1, 0, 2)  # T, N, K
            loss = ctc(logp, tg, torch.full((len(b),), logp.shape[0], dtype=torch.long), tl)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print("step %d/%d loss %.3f %.0f samples/s" % (step, steps, loss.item(), step * a.batch / (time.time() - t0)), file=sys.stderr, flush=True)
        acc, per = evaluate(model, va["x"], va["text"], va["country"])
        print("epoch %d exact %.4f %s" % (epoch, acc, per), file=sys.stderr, flush=True)
        torch.save(model.state_dict(), a.out + ".pt")
    model.eval()
    torch.onnx.export(Exported(model), torch.zeros(1, 1, synth.OCR_H, synth.OCR_W), a.out,
                      input_names=["x"], output_names=["probs"], dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}},
                      opset_version=17, dynamo=False)
    print("wrote", a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
