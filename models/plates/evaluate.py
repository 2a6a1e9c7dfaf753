"""Evaluates `acsgd anpr` and a reference pipeline on the same synthetic test scenes.

    python3 models/plates/synth.py scenes --split test --per-country 200 --out /tmp/plates-test
    python3 models/plates/evaluate.py /tmp/plates-test --acsgd target/release/acsgd [--reference]

Ours: the `acsgd anpr` binary, run once over every image (its `ms` is per frame: localisation
and OCR). The reference: PaddleOCR's PP-OCRv4 detection and recognition models (Apache-2.0)
as the `rapidocr-onnxruntime` wheel ships them, in Python onnxruntime, on the same images in
the same run. A labelled plate counts as read when a plate read whose box centre lies inside
the plate's quadrilateral has exactly its text; for the reference, the text lines whose box
centres lie inside the plate (grown by a fifth of its height) are joined top to bottom, then
normalised as `acsgd` normalises (separators out, Cyrillic look-alikes to Latin).

Also counts, on stderr, the reads that are no labelled plate: on synthetic scenes every read
where no plate is, how many of those fit a plate format, and how many of those are at the
confidence a lane camera's vote takes (0.2, `[anpr] min_confidence`); on real photos (one
labelled plate each) the other reads that fit a format at 0.2 or more, other vehicles'
plates among them. `--failures FILE` lists them with the plates not read.

Prints a Markdown table; `--json FILE` writes the numbers too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402

CYR = dict(zip("АВЕКМНОРСТУХ", "ABEKMHOPCTYX"))


def normalise(s):
    s = "".join(CYR.get(c, c) for c in s.upper())
    return "".join(c for c in s if c.isalnum())


def inside(pt, quad, grow=0.0):
    q = np.array(quad, np.float32)
    if grow:
        c = q.mean(0)
        h = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
        q = c + (q - c) * (1 + grow * h / max(1.0, np.linalg.norm(q[0] - c)))
    return cv2.pointPolygonTest(q.reshape(-1, 1, 2), (float(pt[0]), float(pt[1])), False) >= 0


def cer(pred, truth):
    """Character error rate: edit distance over the truth's length."""
    d = list(range(len(truth) + 1))
    for i, p in enumerate(pred, 1):
        prev, d[0] = d[0], i
        for j, t in enumerate(truth, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (p != t))
    return d[len(truth)] / max(1, len(truth))


def summarise(rows, ms):
    out = {}
    for c in synth.COUNTRIES + ["all"]:
        r = [x for x in rows if c == "all" or x[0] == c]
        if not r:
            continue
        out[c] = {
            "plates": len(r),
            "exact": sum(p == t for _, p, t in r) / len(r),
            "cer": sum(cer(p, t) for _, p, t in r) / len(r),
        }
    out["ms_median"] = statistics.median(ms) if ms else None
    out["ms_p95"] = sorted(ms)[int(0.95 * (len(ms) - 1))] if ms else None
    return out


def run_acsgd(d, labels, binary, threads, models=None):
    """`acsgd anpr` once over every labelled image: the image paths and each one's output line.
    Exit 1 (no image could be read) still has a line per image; no output at all is a failure."""
    paths = [os.path.join(d, l["image"]) for l in labels]
    cmd = [binary, "anpr", "--threads", str(threads)] + (["--models", models] if models else []) + paths
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode not in (0, 1) or not res.stdout.strip():
        sys.exit("acsgd anpr failed: " + res.stderr.strip())
    by_image = {}
    for line in res.stdout.splitlines():
        v = json.loads(line)
        by_image[v["image"]] = v
    return paths, by_image


# The least confidence of a read a lane camera's frame gives the vote (`[anpr] min_confidence`'s
# default, edge/anpr/src/settings.rs).
VOTE_MIN_CONFIDENCE = 0.2


def votable(read):
    """Whether a lane camera's frame would give `read` (one of `acsgd anpr`'s plates) its
    vote: it fits a plate format and is at `VOTE_MIN_CONFIDENCE` or more
    (`camera::frame_plate`)."""
    return bool(read.get("country")) and read["confidence"] >= VOTE_MIN_CONFIDENCE


def ours(d, labels, binary, threads, models=None, failures=None):
    paths, by_image = run_acsgd(d, labels, binary, threads, models)
    rows, ms, extra, formatted, voted = [], [], 0, 0, 0
    for l, p in zip(labels, paths):
        v = by_image.get(p, {"plates": []})
        if "ms" in v:
            ms.append(v["ms"])
        matched = set()
        for plate in l["plates"]:
            got = ""
            for i, r in enumerate(v.get("plates", [])):
                x, y, w, h = r["box"]
                if inside((x + w / 2, y + h / 2), plate["quad"]):
                    got = r["text"]
                    matched.add(i)
            rows.append((plate["country"], got, plate["text"]))
            if failures is not None and got != plate["text"]:
                failures.append({"image": l["image"], "truth": plate["text"], "read": got})
        others = [r for i, r in enumerate(v.get("plates", [])) if i not in matched]
        extra += len(others)
        formatted += sum(1 for r in others if r.get("country"))
        voted += sum(1 for r in others if votable(r))
        if failures is not None and others:
            reads = [r["text"] for r in others]
            failures.append({"image": l["image"], "truth": None, "reads_where_no_plate": reads})
    # Every read counts here; what a lane camera's vote would take of them is the last figure
    # (a read that fits no format is text, which it leaves out: `camera::frame_plate`).
    print(
        "acsgd: %d reads where no plate is (of %d frames): %d fit a plate format, %d of them at %.1f or more"
        % (extra, len(labels), formatted, voted, VOTE_MIN_CONFIDENCE),
        file=sys.stderr,
    )
    return rows, ms


def reference_runs(d, labels, ms):
    """RapidOCR's pipeline over every labelled image: (label, its text lines), the time of
    each image appended to `ms`."""
    from rapidocr_onnxruntime import RapidOCR

    eng = RapidOCR()
    for l in labels:
        img = cv2.imread(os.path.join(d, l["image"]))
        t = time.perf_counter()
        result, _ = eng(img, use_cls=False)
        ms.append((time.perf_counter() - t) * 1e3)
        yield l, result or []


def reference(d, labels):
    rows, ms = [], []
    for l, result in reference_runs(d, labels, ms):
        lines = []
        for box, text, score in result:
            b = np.array(box, np.float32)
            lines.append((b.mean(0), text))
        for plate in l["plates"]:
            mine = sorted([(c[1], c[0], t) for c, t in lines if inside(c, plate["quad"], 0.2)])
            # Rows top to bottom; within a row, left to right.
            mine.sort(key=lambda x: (round(x[0] / 20), x[1]))
            rows.append((plate["country"], normalise("".join(t for _, _, t in mine)), plate["text"]))
    return rows, ms


def read_real(d):
    """A real-photo set: `labels.tsv` (file, country, plate, ...), one labelled plate per photo."""
    labels = []
    with open(os.path.join(d, "labels.tsv"), encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            v = dict(zip(head, line.rstrip("\n").split("\t")))
            labels.append({"image": v["file"], "country": v["country"], "text": v["plate"], "licence": v.get("licence", "")})
    return labels



def ours_real(d, labels, binary, threads, models=None, failures=None):
    """A photo counts as read when its labelled text is among the frame's plate reads.

    Also counts the other reads a lane camera would give its vote: those that fit a plate
    format, at `VOTE_MIN_CONFIDENCE` or more, other than the labelled plate. Other vehicles'
    plates are among them (a photo has one labelled plate); text that is no plate (a camera's
    counter or date printed into the picture, a sign) should not be. Listed in `failures`
    as `other_reads` for a person to tell apart."""
    paths, by_image = run_acsgd(d, labels, binary, threads, models)
    rows, ms, others = [], [], 0
    for l, p in zip(labels, paths):
        v = by_image.get(p, {"plates": []})
        if "ms" in v:
            ms.append(v["ms"])
        reads = [r["text"] for r in v.get("plates", [])]
        got = l["text"] if l["text"] in reads else (reads[0] if reads else "")
        rows.append((l["country"], got, l["text"]))
        if failures is not None and got != l["text"]:
            failures.append({"image": l["image"], "truth": l["text"], "reads": reads})
        other = [(r["text"], r["confidence"]) for r in v.get("plates", []) if votable(r) and r["text"] != l["text"]]
        others += len(other)
        if failures is not None and other:
            failures.append({"image": l["image"], "truth": l["text"], "other_reads": other})
    print(
        "acsgd: %d reads that fit a plate format at %.1f or more other than the labelled plate "
        "(of %d photos; other vehicles' plates among them)" % (others, VOTE_MIN_CONFIDENCE, len(labels)),
        file=sys.stderr,
    )
    return rows, ms


def reference_real(d, labels, failures=None):
    """PP-OCRv4 finds the plate when the labelled text is one of its lines (separators out,
    country marks such as `RUS` or `KZ` around it allowed), or two of its lines joined top
    to bottom (double-row plates). Generous on purpose: the reference is the bar to beat."""
    rows, ms = [], []
    for l, result in reference_runs(d, labels, ms):
        lines = [normalise(text) for _, text, _ in result]
        lines = [x for x in lines if x]
        cands = set(lines) | {a + b for i, a in enumerate(lines) for j, b in enumerate(lines) if i != j}
        hit = any(l["text"] in c and len(c) <= len(l["text"]) + 3 for c in cands)
        rows.append((l["country"], l["text"] if hit else (lines[0] if lines else ""), l["text"]))
        if failures is not None and not hit:
            failures.append({"image": l["image"], "truth": l["text"], "lines": lines})
    return rows, ms


def table(results):
    names = list(results)
    head = "| | " + " | ".join("%s exact | %s CER" % (n, n) for n in names) + " |"
    sep = "|---|" + "---|---|" * len(names)
    lines = [head, sep]
    for c in synth.COUNTRIES + ["all"]:
        if c not in results[names[0]]:
            continue
        cells = []
        for n in names:
            r = results[n][c]
            cells.append("%.1f %% | %.3f" % (100 * r["exact"], r["cer"]))
        lines.append("| %s (%d) | %s |" % (c, results[names[0]][c]["plates"], " | ".join(cells)))
    lines.append("| frame ms, median / p95 | " + " | ".join("%.1f / %.1f | " % (results[n]["ms_median"], results[n]["ms_p95"]) for n in names) + "")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--acsgd", default="target/release/acsgd")
    p.add_argument("--models", help="a directory with candidate models instead of the built-in ones")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reference", action="store_true", help="also run the PaddleOCR reference")
    p.add_argument("--json")
    p.add_argument("--failures", help="write every plate not read, with what was read (and every read where no plate is), to this JSON file")
    a = p.parse_args()
    if os.path.exists(os.path.join(a.dir, "labels.tsv")):
        labels = read_real(a.dir)
        results, fails = {}, {}
        fails["acsgd"] = []
        rows, ms = ours_real(a.dir, labels, a.acsgd, a.threads, a.models, fails["acsgd"])
        results["acsgd"] = summarise(rows, ms)
        if a.reference:
            fails["PP-OCRv4"] = []
            rows, ms = reference_real(a.dir, labels, fails["PP-OCRv4"])
            results["PP-OCRv4"] = summarise(rows, ms)
        print(table(results))
        if a.failures:
            with open(a.failures, "w") as f:
                json.dump(fails, f, indent=1, ensure_ascii=False)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        return
    with open(os.path.join(a.dir, "labels.jsonl")) as f:
        labels = [json.loads(x) for x in f]
    results, fails = {}, []
    rows, ms = ours(a.dir, labels, a.acsgd, a.threads, a.models, fails if a.failures else None)
    results["acsgd"] = summarise(rows, ms)
    if a.failures:
        with open(a.failures, "w") as f:
            json.dump(fails, f, indent=1, ensure_ascii=False)
    if a.reference:
        rows, ms = reference(a.dir, labels)
        results["PP-OCRv4"] = summarise(rows, ms)
    print(table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
