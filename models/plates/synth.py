"""Synthetic licence plates and lane-camera scenes for the five countries these posts see.

Owns: plate text sampling per country (the formats of `edge/src/anpr/format.rs`), plate
rendering (fonts from Debian packages: fonts-dejavu-core, fonts-dejavu-extra, fonts-liberation,
fonts-liberation2, fonts-freefont-ttf, fonts-noto-cjk; single-row plates drawn as before or,
with `--plate-style real`, as real ones are), the degradations a lane camera adds (perspective,
blur, night/IR, glare, dirt, low resolution, JPEG), whole 1280x720 scenes for the localiser and
rectified crops for the recogniser, and the recogniser's input preparation, which
`edge/src/anpr/pipeline.rs` mirrors.

Training and test data come from disjoint seed ranges and disjoint background families
(`split`): the test split's backgrounds, vehicle colours and clutter words are never drawn for
training.

    python3 models/plates/synth.py scenes --split test --per-country 200 --out DIR
    python3 models/plates/synth.py video --out FILE.avi --text 123ABC02 --country KZ
"""

import argparse
import json
import math
import os
import sys

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

COUNTRIES = ["KZ", "KG", "UZ", "RU", "CN"]
DIGITS = "0123456789"
LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
RU_LETTERS = "ABEKMHOPCTYX"
RU_CYRILLIC = dict(zip("ABEKMHOPCTYX", "АВЕКМНОРСТУХ"))
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
TRAILER = "挂"
# The recogniser's alphabet; class 0 is the CTC blank.
CHARSET = DIGITS + LATIN + PROVINCES + TRAILER

OCR_H, OCR_W = 32, 192
# Plate width in a 1280x720 frame (a single-row plate; double-row ones are 0.62 of it). A lane
# camera is installed for plate reading: 130 px puts a character at about 20 px high, the
# least ANPR installation guides ask for.
PLATE_MIN_PX, PLATE_MAX_PX = 130, 300
# The rectifier keeps this much margin around the localised quadrilateral (fraction of height):
# enough that a plate whose corners the localiser placed a little inside is still whole.
MARGIN = 0.2

LATIN_FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationMono-Bold.ttf",
]
CJK_FONT = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 2)  # index 2: SC

SPLITS = {
    # seed offset, background family, clutter words
    "train": (0, 0, ["SCANIA", "VOLVO", "MAN", "DAF", "IVECO", "KAMAZ", "SHACMAN"]),
    "test": (10_000_000, 1, ["HOWO", "FAW", "MAZ", "RENAULT", "FOTON", "URAL", "SITRAK"]),
}

_font_cache = {}


# The Debian package each font comes from, for the message when one is missing.
FONT_PACKAGES = {
    "dejavu": "fonts-dejavu-core fonts-dejavu-extra",
    "liberation2": "fonts-liberation2",
    "liberation": "fonts-liberation",
    "freefont": "fonts-freefont-ttf",
    "noto": "fonts-noto-cjk",
}


def font(path, size, index=0):
    key = (path, size, index)
    if key not in _font_cache:
        try:
            _font_cache[key] = ImageFont.truetype(path, size, index=index)
        except OSError as e:
            # Pillow says only "cannot open resource"; name the file and its package.
            package = FONT_PACKAGES.get(os.path.basename(os.path.dirname(path)), "?")
            sys.exit(f"synth.py: cannot open the font {path} ({e}): apt-get install {package} "
                     "(models/README.md, Making them again)")
    return _font_cache[key]


# ---------------------------------------------------------------------------------------------
# Plate text


def pick(rng, s, n):
    return "".join(s[rng.integers(len(s))] for _ in range(n))


# Region codes as issued (the default), or any two digits (Russian three-digit ones any of
# 100-999; `scenes --regions any`): a test set for a reader that must not lean on the real codes
# more than on what it sees.
ANY_REGION = False


def serial(rng, n):
    """A plate's serial number of `n` digits as issued: never all 0 (`format::issued`). One that
    draws all 0 ends in 1 instead, so the draws after it are the same as before this rule."""
    s = pick(rng, DIGITS, n)
    return s[:-1] + "1" if s == "0" * n else s


def sample_text(rng, country):
    """Normalised plate text (as `acsgd anpr` prints it) and where a double-row plate splits."""
    if country == "KZ":
        kind = rng.integers(3)
        region = "%02d" % rng.integers(1, 100 if ANY_REGION else 21)
        if kind == 0:
            return serial(rng, 3) + pick(rng, LATIN, 3) + region, 3
        if kind == 1:
            return serial(rng, 3) + pick(rng, LATIN, 2) + region, 3
        return serial(rng, 4) + pick(rng, LATIN, 2) + region, 4
    if country == "KG":
        return "%02d" % rng.integers(1, 100 if ANY_REGION else 10) + serial(rng, 3) + pick(rng, LATIN, 3), 2
    if country == "UZ":
        if ANY_REGION:
            region = "%02d" % rng.integers(1, 100)
        else:
            region = "%02d" % rng.choice([1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95])
        if rng.random() < 0.75:
            return region + pick(rng, LATIN, 1) + serial(rng, 3) + pick(rng, LATIN, 2), 2
        return region + serial(rng, 3) + pick(rng, LATIN, 3), 2
    if country == "RU":
        if ANY_REGION:
            region = str(rng.integers(100, 1000)) if rng.random() < 0.3 else "%02d" % rng.integers(1, 100)
        else:
            region = str(rng.integers(1, 200)).zfill(2) if rng.random() < 0.3 else "%02d" % rng.integers(1, 100)
        if rng.random() < 0.75:
            return pick(rng, RU_LETTERS, 1) + serial(rng, 3) + pick(rng, RU_LETTERS, 2) + region, 4
        return pick(rng, RU_LETTERS, 2) + serial(rng, 4) + region, 2
    if country == "CN":
        head = PROVINCES[rng.integers(len(PROVINCES))] + CN_LETTERS[rng.integers(len(CN_LETTERS))]
        kind = rng.random()
        alnum = DIGITS * 3 + CN_LETTERS
        if kind < 0.6:
            return head + pick(rng, alnum, 5), 2
        if kind < 0.8:
            return head + pick(rng, DIGITS + "DF", 1) + pick(rng, DIGITS, 5), 2
        return head + pick(rng, alnum, 4) + TRAILER, 2
    raise ValueError(country)


# ---------------------------------------------------------------------------------------------
# Plate rendering


def draw_text_box(img, box, text, path, index=0, fill=(0, 0, 0), squeeze=1.0):
    """Draws `text` stretched into `box` (x0, y0, x1, y1) of a PIL image."""
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    bw, bh = max(2, x1 - x0), max(2, y1 - y0)
    f = font(path, 96, index)
    l, t, r, b = f.getbbox(text)
    tw, th = max(1, r - l), max(1, b - t)
    layer = Image.new("L", (tw + 8, th + 8), 0)
    ImageDraw.Draw(layer).text((4 - l, 4 - t), text, font=f, fill=255)
    w = min(bw, int(bh * tw / th * squeeze * 1.25))
    layer = layer.resize((max(2, w), bh), Image.BILINEAR)
    colour = Image.new("RGB", layer.size, fill)
    img.paste(colour, (x0 + (bw - w) // 2, y0), layer)


def render_plate(rng, country, text, split_at, double):
    """An RGB plate image (numpy) with `text` laid out as the country's plates are."""
    lf = LATIN_FONTS[rng.integers(len(LATIN_FONTS))]
    shown = "".join(RU_CYRILLIC.get(c, c) for c in text) if country == "RU" else text
    yellow = country == "CN" and (double or rng.random() < 0.5)
    if country == "CN":
        bg, fg = ((245, 200, 20), (10, 10, 10)) if yellow else ((20, 70, 190), (245, 245, 245))
    else:
        shade = int(rng.integers(215, 256))
        bg, fg = (shade, shade, shade - int(rng.integers(0, 25))), (15, 15, 15)
    w, h = ((300, 200) if country != "CN" else (440, 220)) if double else (520, 112)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    d.rectangle([2, 2, w - 3, h - 3], outline=fg, width=3)
    sq = float(rng.uniform(0.85, 1.1))

    def cjk_aware(box, s):
        # Province characters and the trailer mark need the CJK font.
        x0, y0, x1, y1 = box
        n = len(s)
        for i, c in enumerate(s):
            cb = (x0 + (x1 - x0) * i / n, y0, x0 + (x1 - x0) * (i + 1) / n - 3, y1)
            if c in PROVINCES or c == TRAILER:
                draw_text_box(img, cb, c, CJK_FONT[0], CJK_FONT[1], fg, 1.0)
            else:
                draw_text_box(img, cb, c, lf, 0, fg, sq)

    if double:
        top, bottom = shown[:split_at], shown[split_at:]
        if country == "CN":
            cjk_aware((w * 0.28, h * 0.08, w * 0.72, h * 0.40), top)
            cjk_aware((w * 0.05, h * 0.46, w * 0.95, h * 0.92), bottom)
        else:
            mark = {"KZ": "KZ", "KG": "KG", "UZ": "UZ", "RU": "RUS"}[country]
            draw_text_box(img, (w * 0.04, h * 0.10, w * 0.2, h * 0.24), mark, lf, 0, fg)
            draw_text_box(img, (w * 0.22, h * 0.08, w * 0.94, h * 0.44), top, lf, 0, fg, sq)
            draw_text_box(img, (w * 0.06, h * 0.52, w * 0.94, h * 0.92), bottom, lf, 0, fg, sq)
        return np.array(img)

    if country == "KZ":
        d.rectangle([6, 6, int(w * 0.11), h - 7], fill=(0, 150, 200))
        draw_text_box(img, (10, h * 0.62, w * 0.1, h * 0.86), "KZ", lf, 0, (255, 255, 255))
        main, region = shown[:-2], shown[-2:]
        digits = len(main) - len(main.lstrip("0123456789"))
        draw_text_box(img, (w * 0.13, h * 0.14, w * 0.78, h * 0.86), main[:digits] + " " + main[digits:], lf, 0, fg, sq)
        d.line([int(w * 0.8), 6, int(w * 0.8), h - 7], fill=fg, width=3)
        draw_text_box(img, (w * 0.82, h * 0.14, w * 0.97, h * 0.86), region, lf, 0, fg, sq)
    elif country == "KG":
        d.rectangle([6, 6, int(w * 0.11), h - 7], fill=(200, 20, 30))
        draw_text_box(img, (10, h * 0.62, w * 0.1, h * 0.86), "KG", lf, 0, (255, 255, 255))
        draw_text_box(img, (w * 0.13, h * 0.14, w * 0.27, h * 0.86), shown[:2], lf, 0, fg, sq)
        d.line([int(w * 0.285), 6, int(w * 0.285), h - 7], fill=fg, width=3)
        draw_text_box(img, (w * 0.30, h * 0.14, w * 0.97, h * 0.86), shown[2:5] + " " + shown[5:], lf, 0, fg, sq)
    elif country == "UZ":
        draw_text_box(img, (w * 0.03, h * 0.14, w * 0.16, h * 0.86), shown[:2], lf, 0, fg, sq)
        d.line([int(w * 0.175), 6, int(w * 0.175), h - 7], fill=fg, width=3)
        rest = shown[2:]
        spaced = rest[0] + " " + rest[1:4] + " " + rest[4:] if rest[0].isalpha() else rest[:3] + " " + rest[3:]
        draw_text_box(img, (w * 0.19, h * 0.14, w * 0.86, h * 0.86), spaced, lf, 0, fg, sq)
        d.rectangle([int(w * 0.88), int(h * 0.15), int(w * 0.97), int(h * 0.5)], fill=(30, 160, 220))
        draw_text_box(img, (w * 0.88, h * 0.58, w * 0.97, h * 0.85), "UZ", lf, 0, fg)
    elif country == "RU":
        region = shown[-3:] if len(shown) in (9,) else shown[-2:]
        main = shown[: len(shown) - len(region)]
        spaced = main[0] + " " + main[1:4] + " " + main[4:] if main[1].isdigit() else main[:2] + " " + main[2:]
        draw_text_box(img, (w * 0.03, h * 0.12, w * 0.72, h * 0.9), spaced, lf, 0, fg, sq)
        d.line([int(w * 0.74), 6, int(w * 0.74), h - 7], fill=fg, width=3)
        draw_text_box(img, (w * 0.76, h * 0.08, w * 0.97, h * 0.62), region, lf, 0, fg, sq)
        draw_text_box(img, (w * 0.76, h * 0.68, w * 0.88, h * 0.88), "RUS", lf, 0, fg)
        for i, c in enumerate([(255, 255, 255), (0, 60, 200), (220, 20, 20)]):
            d.rectangle([int(w * 0.89), int(h * (0.68 + 0.067 * i)), int(w * 0.96), int(h * (0.68 + 0.067 * (i + 1)))], fill=c)
    else:  # CN single row
        cjk_aware((w * 0.04, h * 0.12, w * 0.27, h * 0.88), shown[:2])
        d.ellipse([int(w * 0.295), int(h * 0.46), int(w * 0.315), int(h * 0.56)], fill=fg)
        cjk_aware((w * 0.34, h * 0.12, w * 0.96, h * 0.88), shown[2:])
    return np.array(img)


# Plates as real ones are drawn (`scenes --plate-style real|mixed`): narrow fonts, each
# character in its own cell with the small gaps of a plate's type, no word spaces, Russian
# series letters smaller than its digits, CN characters tall and narrow. The default style
# (`drawn`) stretches each group into its box with word spaces: wide, loose text that real
# plates do not have (a recogniser's last layer fine-tuned on it read fewer real photos).
NARROW_FONTS = [
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
]
CJK_FONTS = [("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 2),
             ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2)]
PLATE_STYLE = "drawn"

_glyphs = {}


def glyph(path, index, c):
    """The ink of one character at 96 px: an L image cropped to its bounding box."""
    key = (path, index, c)
    if key not in _glyphs:
        f = font(path, 96, index)
        l, t, r, b = f.getbbox(c)
        layer = Image.new("L", (max(1, r - l) + 4, max(1, b - t) + 4), 0)
        ImageDraw.Draw(layer).text((2 - l, 2 - t), c, font=f, fill=255)
        _glyphs[key] = layer
    return _glyphs[key]


def draw_cells(img, box, groups, fg, fonts, condense, gap, group_gap, heights=None):
    """Draws `groups` (strings) into `box`, each character its own cell: as high as the box
    times its `heights` entry (1 by default), bottoms on one line, as wide as its glyph
    condensed by `condense`, `gap` (of the box height) between characters and `group_gap`
    between groups; the whole shrunk to fit the box's width and centred in it."""
    x0, y0, x1, y1 = box
    bh = y1 - y0
    cells = []
    i = 0
    for gi, g in enumerate(groups):
        for ci, c in enumerate(g):
            lead = 0 if (gi == 0 and ci == 0) else (group_gap if ci == 0 else gap) * bh
            hh = bh * (heights[i] if heights else 1.0)
            i += 1
            if c == "·":  # a Chinese plate's dot: a round mark at half height
                cells.append((lead, 0.12 * bh, 0.0, None))
                continue
            path, index = fonts(c)
            gl = glyph(path, index, c)
            ww = hh * gl.size[0] / gl.size[1] * condense
            if c == "1":
                ww = max(ww, hh * 0.28)
            cells.append((lead, ww, hh, gl))
    total = sum(l + w for l, w, _, _ in cells)
    k = min(1.0, (x1 - x0) / max(total, 1))
    x = x0 + ((x1 - x0) - total * k) / 2
    for lead, ww, hh, gl in cells:
        x += lead * k
        if gl is None:
            r = ww * k / 2
            cy = (y0 + y1) / 2
            ImageDraw.Draw(img).ellipse([x, cy - r, x + 2 * r, cy + r], fill=fg)
            x += ww * k
            continue
        w, h = max(2, int(round(ww * k))), max(2, int(round(hh)))
        layer = gl.resize((w, h), Image.BILINEAR)
        img.paste(Image.new("RGB", layer.size, fg), (int(round(x)), int(round(y1 - h))), layer)
        x += ww * k


def render_plate_real(rng, country, text):
    """A single-row plate drawn as real ones are (see `NARROW_FONTS`)."""
    lf = NARROW_FONTS[rng.integers(len(NARROW_FONTS))]
    cf = CJK_FONTS[rng.integers(len(CJK_FONTS))]

    def fonts(c):
        return cf if (c in PROVINCES or c == TRAILER) else (lf, 0)

    def latin(c):
        return lf, 0

    narrow = "Narrow" in lf or "Condensed" in lf
    condense = float(rng.uniform(0.8, 1.0) if narrow else rng.uniform(0.62, 0.8))
    gap = float(rng.uniform(0.02, 0.1))
    shown = "".join(RU_CYRILLIC.get(c, c) for c in text) if country == "RU" else text
    w, h = (520, 112) if country != "CN" else (440, 140)
    if country == "CN":
        yellow = rng.random() < 0.3
        bg, fg = ((245, 200, 20), (10, 10, 10)) if yellow else ((20, 70, 190), (245, 245, 245))
    else:
        shade = int(rng.integers(200, 256))
        bg, fg = (shade, shade, shade - int(rng.integers(0, 25))), (15, 15, 15)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    d.rectangle([2, 2, w - 3, h - 3], outline=fg, width=int(rng.integers(2, 5)))
    top, bottom = h * float(rng.uniform(0.1, 0.17)), h * float(rng.uniform(0.84, 0.9))

    def strip(colour, code):
        """The flag strip at the left, its country code under the emblem."""
        xa, xb = 6, int(w * 0.11)
        d.rectangle([xa, 6, xb, h - 7], fill=colour)
        cx, r = (xa + xb) / 2, (xb - xa) * 0.3
        d.ellipse([cx - r, h * 0.18, cx + r, h * 0.18 + 2 * r], fill=(240, 200, 40))
        white = (255, 255, 255)
        draw_cells(img, (xa + 2, h * 0.64, xb - 2, h * 0.86), [code], white, latin, 0.8, 0.05, 0)

    if country == "KZ":
        strip((0, 150, 200), "KZ")
        main, region = shown[:-2], shown[-2:]
        digits = len(main) - len(main.lstrip("0123456789"))
        sep = int(w * 0.8)
        draw_cells(img, (w * 0.13, top, sep - 6, bottom), [main[:digits], main[digits:]], fg, fonts,
                   condense, gap, float(rng.uniform(0.0, 0.2)))
        d.line([sep, 6, sep, h - 7], fill=fg, width=3)
        draw_cells(img, (sep + 6, top, w * 0.97, bottom), [region], fg, fonts, condense, gap, 0)
    elif country == "KG":
        strip((200, 20, 30), "KG")
        sep = int(w * 0.285)
        draw_cells(img, (w * 0.13, top, sep - 6, bottom), [shown[:2]], fg, fonts, condense, gap, 0)
        d.line([sep, 6, sep, h - 7], fill=fg, width=3)
        draw_cells(img, (sep + 6, top, w * 0.97, bottom), [shown[2:5], shown[5:]], fg, fonts,
                   condense, gap, float(rng.uniform(0.05, 0.25)))
    elif country == "UZ":
        sep = int(w * 0.175)
        draw_cells(img, (w * 0.03, top, sep - 6, bottom), [shown[:2]], fg, fonts, condense, gap, 0)
        d.line([sep, 6, sep, h - 7], fill=fg, width=3)
        rest = shown[2:]
        groups = [rest[0], rest[1:4], rest[4:]] if rest[0].isalpha() else [rest[:3], rest[3:]]
        draw_cells(img, (sep + 6, top, w * 0.86, bottom), groups, fg, fonts, condense, gap,
                   float(rng.uniform(0.05, 0.25)))
        d.rectangle([int(w * 0.88), int(h * 0.15), int(w * 0.97), int(h * 0.5)], fill=(30, 160, 220))
        draw_cells(img, (w * 0.88, h * 0.58, w * 0.97, h * 0.85), ["UZ"], fg, latin, 0.8, 0.05, 0)
    elif country == "RU":
        region = shown[-3:] if len(shown) == 9 else shown[-2:]
        main = shown[: len(shown) - len(region)]
        letter = float(rng.uniform(0.72, 0.8))
        heights = [1.0 if c.isdigit() else letter for c in main]
        groups = [main[0], main[1:4], main[4:]] if main[1].isdigit() else [main[:2], main[2:]]
        sep = int(w * 0.74)
        draw_cells(img, (w * 0.03, top, sep - 6, bottom), groups, fg, fonts, condense, gap,
                   float(rng.uniform(0.0, 0.15)), heights)
        d.line([sep, 6, sep, h - 7], fill=fg, width=3)
        draw_cells(img, (sep + 6, h * 0.08, w * 0.97, h * 0.62), [region], fg, fonts, condense, gap, 0)
        draw_cells(img, (sep + 8, h * 0.7, w * 0.86, h * 0.88), ["RUS"], fg, latin, 0.8, 0.05, 0)
        for i, c in enumerate([(255, 255, 255), (0, 60, 200), (220, 20, 20)]):
            d.rectangle([int(w * 0.87), int(h * (0.7 + 0.06 * i)), int(w * 0.95), int(h * (0.7 + 0.06 * (i + 1)))], fill=c)
    else:  # CN: province, letter, a dot, five characters, all tall and narrow
        condense = float(rng.uniform(0.55, 0.75))
        draw_cells(img, (w * 0.04, top, w * 0.96, bottom), [shown[:2], "·", shown[2:]], fg, fonts,
                   condense, float(rng.uniform(0.06, 0.14)), float(rng.uniform(0.04, 0.1)))
    return np.array(img)


# ---------------------------------------------------------------------------------------------
# Degradations


def degrade_plate(rng, plate):
    """Dirt and wear on the plate itself (before it is placed)."""
    h, w = plate.shape[:2]
    out = plate.astype(np.float32)
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 6))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.05, 0.25) * h
            mask = np.zeros((h, w), np.float32)
            cv2.circle(mask, (int(cx), int(cy)), int(r), 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), r / 2 + 1) * rng.uniform(0.2, 0.6)
            dirt = np.array([90, 70, 50], np.float32) * rng.uniform(0.6, 1.2)
            out = out * (1 - mask[..., None]) + dirt * mask[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def degrade_image(rng, img, night):
    """What the camera does to the whole picture: glare, blur, noise, low resolution, JPEG."""
    out = img.astype(np.float32)
    h, w = img.shape[:2]
    if night:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        out = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < 0.25:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.03, 0.15) * max(w, h)
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(60, 170)
        out = out + blob[..., None]
    out = np.clip(out, 0, 255)
    k = rng.random()
    if k < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.6))
    elif k < 0.45:
        n = int(rng.integers(3, 8))
        kern = np.zeros((n, n), np.float32)
        kern[n // 2, :] = 1.0 / n
        out = cv2.filter2D(out, -1, kern)
    out = out + rng.normal(0, rng.uniform(1, 10 if not night else 16), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:
        f = rng.uniform(0.6, 0.85)
        small = cv2.resize(out, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    q = int(rng.integers(40, 95))
    ok, enc = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]


# ---------------------------------------------------------------------------------------------
# Scenes


def background(rng, family, w, h):
    """A lane scene without the vehicle: sky, road, kerb, shadows, texture. The two families
    (train, test) differ in palette and in the kind of clutter."""
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.15, 0.45))
    sky = np.array([rng.uniform(120, 220), rng.uniform(140, 230), rng.uniform(170, 255)])
    if family == 1:
        sky = sky[::-1] * rng.uniform(0.5, 0.9)
    img[:horizon] = sky
    road = rng.uniform(60, 140)
    img[horizon:] = road
    yy = np.linspace(0, 1, h)[:, None, None]
    img = img * (0.8 + 0.4 * yy)
    noise = cv2.resize(rng.normal(0, 1, (h // 16 + 1, w // 16 + 1)).astype(np.float32), (w, h))
    img += noise[..., None] * rng.uniform(5, 25)
    for _ in range(int(rng.integers(3, 12))):
        c = rng.uniform(0, 255, 3) if family == 0 else rng.uniform(0, 255) * np.ones(3)
        x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        if family == 0:
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.uniform(20, 300)), y0 + int(rng.uniform(10, 200))), c.tolist(), -1)
        else:
            cv2.line(img, (x0, y0), (int(rng.uniform(0, w)), int(rng.uniform(0, h))), c.tolist(), int(rng.integers(2, 12)))
    return np.clip(img, 0, 255).astype(np.uint8)


def vehicle(rng, img, family, words, rear):
    """Paints a truck front (grille, headlights, bumper) or a trailer rear; returns the box of
    the bumper area where the plate goes."""
    h, w = img.shape[:2]
    vw = int(rng.uniform(0.35, 0.75) * w)
    vh = int(rng.uniform(0.5, 0.95) * h)
    x0 = int(rng.uniform(-0.1 * vw, w - 0.9 * vw))
    y0 = int(rng.uniform(0, h - vh * 0.8))
    palette = [(200, 30, 30), (240, 240, 240), (30, 60, 160), (20, 120, 60), (230, 180, 30), (90, 90, 90)]
    if family == 1:
        palette = [(250, 110, 20), (150, 20, 120), (200, 200, 160), (40, 40, 40), (100, 160, 200), (140, 90, 50)]
    col = np.array(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.6, 1.1)
    cv2.rectangle(img, (x0, y0), (x0 + vw, y0 + vh), col.tolist(), -1)
    if rear:
        for i in range(int(rng.integers(2, 6))):
            x = x0 + int(vw * (i + 1) / 6)
            cv2.line(img, (x, y0), (x, y0 + vh), (col * 0.6).tolist(), int(rng.integers(2, 8)))
        for sx in (x0 + int(vw * 0.05), x0 + int(vw * 0.85)):
            cv2.rectangle(img, (sx, y0 + int(vh * 0.75)), (sx + int(vw * 0.1), y0 + int(vh * 0.8)), (30, 30, 220), -1)
    else:
        gx0, gx1 = x0 + int(vw * 0.2), x0 + int(vw * 0.8)
        gy0, gy1 = y0 + int(vh * 0.35), y0 + int(vh * 0.65)
        cv2.rectangle(img, (gx0, gy0), (gx1, gy1), (40, 40, 40), -1)
        for y in range(gy0, gy1, int(rng.integers(6, 18))):
            cv2.line(img, (gx0, y), (gx1, y), (150, 150, 150), int(rng.integers(1, 4)))
        for hx in (x0 + int(vw * 0.04), x0 + int(vw * 0.84)):
            cv2.rectangle(img, (hx, y0 + int(vh * 0.62)), (hx + int(vw * 0.12), y0 + int(vh * 0.7)), (250, 250, 230), -1)
        word = words[rng.integers(len(words))]
        cv2.putText(img, word, (gx0 + 10, gy0 - 10), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.8, 2.0), (230, 230, 230), int(rng.integers(2, 5)))
    by0 = y0 + int(vh * 0.72)
    cv2.rectangle(img, (x0, by0), (x0 + vw, y0 + int(vh * 0.9)), (col * 0.5).tolist(), -1)
    return x0 + int(vw * 0.2), by0, x0 + int(vw * 0.8), y0 + int(vh * 0.9)


def perspective_quad(rng, pw, ph, cx, cy, width, strength=1.0):
    """Where a plate of pw x ph pixels lands: scaled to `width`, rotated, foreshortened."""
    s = width / pw
    pts = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]]) * s
    yaw = rng.uniform(-0.35, 0.35) * strength  # horizontal foreshortening
    pts[:, 1] *= 1 + yaw * np.sign(pts[:, 0]) * 0.3
    pts[:, 0] *= 1 - abs(yaw) * 0.3
    pitch = rng.uniform(-0.25, 0.25) * strength
    pts[:, 0] *= 1 + pitch * np.sign(pts[:, 1]) * 0.25
    a = math.radians(rng.uniform(-7, 7) * strength)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = pts @ rot.T
    return (pts + [cx, cy]).astype(np.float32)


def paste_plate(img, plate, quad):
    ph, pw = plate.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad)
    h, w = img.shape[:2]
    warped = cv2.warpPerspective(plate.astype(np.float32), m, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    img[:] = np.clip(img * (1 - mask[..., None]) + warped * mask[..., None], 0, 255)


def make_plate(rng, country=None, double=None, double_share=0.25):
    country = country or COUNTRIES[rng.integers(len(COUNTRIES))]
    text, split_at = sample_text(rng, country)
    if double is None:
        double = rng.random() < double_share
    if not double and (PLATE_STYLE == "real" or (PLATE_STYLE == "mixed" and rng.random() < 0.5)):
        plate = degrade_plate(rng, render_plate_real(rng, country, text))
    else:
        plate = degrade_plate(rng, render_plate(rng, country, text, split_at, double))
    return country, text, double, plate


def scene(rng, split, country=None, w=1280, h=720, scale=1.0, text_rng=None):
    """One lane-camera frame with one plate (sometimes two vehicles). Returns the RGB image
    and the plates: text, country, quadrilateral (tl, tr, br, bl).

    With `text_rng`, the scene gets the text around plates that real pictures have (`--hard`):
    writing on the vehicles, screws and dealers' frames on the plates, and what the camera
    prints into its pictures. Drawn from `text_rng` alone, so the scene is otherwise the one
    `rng` alone makes: a hard set and a plain one of the same seeds differ only by that text."""
    _, family, words = SPLITS[split]
    img = background(rng, family, w, h)
    night = rng.random() < 0.2
    plates = []
    bumpers = [vehicle(rng, img, family, words, rear=rng.random() < 0.4) for _ in range(1 if rng.random() < 0.85 else 2)]
    if text_rng is not None:
        for box in bumpers:
            vehicle_writing(text_rng, img, box)
    for k, (bx0, by0, bx1, by1) in enumerate(reversed(bumpers)):
        c, text, double, plate = make_plate(rng, country if k == 0 else None)
        if text_rng is not None:
            plate = screws(text_rng, plate, double)
        ph, pw = plate.shape[:2]
        width = rng.uniform(PLATE_MIN_PX, PLATE_MAX_PX) * (0.62 if double else 1.0) * scale
        cx = np.clip(rng.uniform(bx0, bx1), width, w - width)
        cy = np.clip(rng.uniform(by0, by1), width * ph / pw + 5, h - width * ph / pw - 5)
        quad = perspective_quad(rng, pw, ph, cx, cy, width)
        if any(quad_overlaps(quad, p["quad"]) for p in plates):
            continue
        if night:
            plate = np.clip(plate.astype(np.float32) * 1.3 + 40, 0, 255)
        paste_plate(img, plate, quad)
        if text_rng is not None:
            dealer_frame(text_rng, img, quad)
        plates.append({"text": text, "country": c, "double": bool(double), "quad": quad.round(1).tolist()})
    img = img.astype(np.float32)
    if night:
        img = img * rng.uniform(0.25, 0.5)
        for p in plates:
            q = np.array(p["quad"], np.float32)
            m = np.zeros((h, w), np.float32)
            cv2.fillConvexPoly(m, q.astype(np.int32), 1.0)
            img = img * (1 + m[..., None] * 1.8)
    img = degrade_image(rng, np.clip(img, 0, 255).astype(np.uint8), night)
    if text_rng is not None:
        img = camera_overlay(text_rng, img, [p["quad"] for p in plates])
    return img, plates


# ---------------------------------------------------------------------------------------------
# Text around plates (`scenes --hard`): what real pictures have and our plain scenes do not.
# Real photos showed it matters: a parking camera's counter `0000/00001` was read as the
# Russian plate `O000OO001` (models/text_models.md). None of it is a plate: each is either
# too long or too short for every format, or fits one only by a misread.

TEXT_FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
]


def put_text(img, xy, text, size, fill, rng, outline=None, box=None):
    """Draws `text` at `xy` (top left) into the RGB array `img`; returns its box."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    f = font(TEXT_FONTS[rng.integers(len(TEXT_FONTS))], int(size))
    l, t, r, b = d.textbbox(xy, text, font=f, stroke_width=1 if outline else 0)
    if box is not None:
        d.rectangle([l - 3, t - 3, r + 3, b + 3], fill=box)
    d.text(xy, text, font=f, fill=fill, stroke_width=1 if outline else 0, stroke_fill=outline)
    img[:] = np.array(pil)
    return l, t, r, b


def overlaps(box, quads, pad=6):
    l, t, r, b = box
    for q in quads:
        q = np.array(q)
        if not (r + pad < q[:, 0].min() or q[:, 0].max() < l - pad or b + pad < q[:, 1].min() or q[:, 1].max() < t - pad):
            return True
    return False


def camera_overlay(rng, img, quads):
    """What a lane or parking camera prints into its pictures, after its optics and before its
    JPEG: the date and time, its name or lane, a counter, the speed, its position. Items that
    would cover a plate are left out."""
    if rng.random() < 0.2:
        return img
    h, w = img.shape[:2]
    img = img.copy()
    y, mo, d = int(rng.integers(2019, 2027)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hh, mi, ss = int(rng.integers(0, 24)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    date = ["%04d-%02d-%02d" % (y, mo, d), "%02d.%02d.%04d" % (d, mo, y), "%04d/%02d/%02d" % (y, mo, d), "%02d-%02d-%04d" % (mo, d, y)][rng.integers(4)]
    clock = "%02d:%02d:%02d" % (hh, mi, ss)
    items = [date + " " + clock] if rng.random() < 0.6 else [date, clock]
    names = ["KORGAS L%d" % rng.integers(1, 9), "CAM %02d" % rng.integers(1, 33), "KPP-%d IN" % rng.integers(1, 5), "LANE %02d" % rng.integers(1, 13), "KORDAI-2 OUT", "ch%02d" % rng.integers(1, 17), "IPC-%d" % rng.integers(1, 9)]
    counters = [
        "%04d/%05d" % (0 if rng.random() < 0.5 else rng.integers(1, 10000), rng.integers(1, 100000)),
        "FRAME %06d" % rng.integers(0, 1000000),
        "%d km/h" % rng.integers(3, 90),
        "N%.5f E%.5f" % (42 + rng.random() * 3, 74 + rng.random() * 8),
        "%d" % rng.integers(100000, 99999999),
    ]
    if rng.random() < 0.7:
        items.append(names[rng.integers(len(names))])
    for _ in range(int(rng.integers(0, 3))):
        items.append(counters[rng.integers(len(counters))])
    size = rng.uniform(16, 42)
    fill = (255, 255, 255) if rng.random() < 0.7 else (255, 230, 40)
    outline = (0, 0, 0) if rng.random() < 0.5 else None
    box = (0, 0, 0) if outline is None and rng.random() < 0.4 else None
    corners = [(0.02, 0.02), (0.6, 0.02), (0.02, 0.92), (0.6, 0.92), (0.02, 0.08), (0.6, 0.86)]
    order = rng.permutation(len(corners))
    for text, k in zip(items, order):
        x, yy = corners[k]
        x = x * w + rng.uniform(0, 0.1 * w)
        yy = yy * h
        probe = img.copy()
        b = put_text(probe, (x, yy), text, size, fill, rng, outline, box)
        if b[2] < w and b[3] < h and not overlaps(b, quads):
            img = probe
    return img


def vehicle_writing(rng, img, bumper):
    """Writing on a cab or a trailer above its bumper: a carrier's name, its telephone, a fleet
    number, TIR and ADR marks."""
    if rng.random() < 0.3:
        return
    bx0, by0, bx1, by1 = bumper
    bh = by1 - by0
    texts = [
        "TRANS LOGISTIC", "ТРАНСЛОГИСТИК", "KAZ AVTO TRANS", "ЖОЛ ТРАНС", "SILK WAY CARGO", "ДАЛЬНОБОЙ",
        "+7 701 %03d %02d %02d" % (rng.integers(0, 1000), rng.integers(0, 100), rng.integers(0, 100)),
        "+7 (727) %03d-%02d-%02d" % (rng.integers(0, 1000), rng.integers(0, 100), rng.integers(0, 100)),
        "8 800 %03d %02d %02d" % (rng.integers(0, 1000), rng.integers(0, 100), rng.integers(0, 100)),
        "TIR", "ADR", "№ %d" % rng.integers(1, 999), "%d" % rng.integers(10, 999), "www.cargo-%d.kz" % rng.integers(1, 99),
    ]
    for _ in range(int(rng.integers(1, 4))):
        text = texts[rng.integers(len(texts))]
        size = rng.uniform(18, 64)
        x = rng.uniform(bx0 - 0.2 * (bx1 - bx0), bx1 - 0.2 * (bx1 - bx0))
        y = rng.uniform(by0 - 3.0 * bh, by0 - size)
        fill = tuple(int(v) for v in rng.choice([[250, 250, 250], [20, 20, 20], [220, 30, 30], [30, 60, 180], [250, 200, 0]]))
        put_text(img, (x, y), text, size, fill, rng)


def screws(rng, plate, double):
    """Two screws on a plate (single-row: near the top, between the characters), as the
    holder is fixed."""
    if rng.random() < 0.5:
        return plate
    plate = plate.copy()
    h, w = plate.shape[:2]
    r = max(3, int(h * (0.05 if double else 0.07)))
    y = int(h * rng.uniform(0.06, 0.14) + r)
    for x in (w * rng.uniform(0.2, 0.3), w * rng.uniform(0.7, 0.8)):
        shade = int(rng.integers(40, 160))
        cv2.circle(plate, (int(x), y), r, (shade, shade, shade), -1)
        cv2.line(plate, (int(x) - r + 1, y), (int(x) + r - 1, y), (20, 20, 20), 1)
    return plate


def dealer_frame(rng, img, quad):
    """A dealer's plate frame: a dark band under the plate with its name or telephone."""
    if rng.random() < 0.7:
        return
    q = np.array(quad, np.float32)
    tl, tr, br, bl = q
    down = (bl - tl) * rng.uniform(0.25, 0.4)
    band = np.array([bl, br, br + down, bl + down], np.int32)
    cv2.fillConvexPoly(img, band, (25, 25, 25))
    name = ["TOYOTA CENTER", "AVTO-DOM ALMATY", "MERCUR AUTO", "+7 727 250 00 00", "HYUNDAI ASTANA", "КАМАЗ-ЦЕНТР"][rng.integers(6)]
    height = float(np.linalg.norm(down))
    x, y = bl + (br - bl) * 0.1 + down * 0.15
    put_text(img, (float(x), float(y)), name, max(8, height * 0.6), (230, 230, 230), rng)


def quad_overlaps(a, b):
    a, b = np.array(a), np.array(b)
    return not (a[:, 0].max() < b[:, 0].min() or b[:, 0].max() < a[:, 0].min() or a[:, 1].max() < b[:, 1].min() or b[:, 1].max() < a[:, 1].min())


# ---------------------------------------------------------------------------------------------
# The recogniser's input (mirrored by edge/src/anpr/pipeline.rs)


def order_quad(q):
    """tl, tr, br, bl from any four corners: the two leftmost are the left ones, the upper of
    each pair the top (as `order` in `edge/src/anpr/pipeline.rs`)."""
    q = np.array(q, np.float32)
    q = q[np.argsort(q[:, 0], kind="stable")]
    (tl, bl), (tr, br) = sorted(q[:2], key=lambda p: p[1]), sorted(q[2:], key=lambda p: p[1])
    return np.array([tl, tr, br, bl], np.float32)


def rectify(img, quad):
    """Warps the quadrilateral (grown by MARGIN of its height) to an upright crop."""
    q = order_quad(quad)
    wt = (np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2
    ht = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
    ow, oh = max(8, int(round(wt + 2 * MARGIN * ht))), max(8, int(round(ht * (1 + 2 * MARGIN))))
    m = MARGIN * ht
    dst = np.array([[m, m], [ow - m, m], [ow - m, oh - m], [m, oh - m]], np.float32)
    t = cv2.getPerspectiveTransform(q, dst)
    return cv2.warpPerspective(img, t, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def ocr_input(crop_rgb, double):
    """32x192 grey: a double-row plate's rows side by side, top row first, each in half the
    width (for both plate shapes that keeps the characters' proportions, within 15 %)."""
    g = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    h = g.shape[0]
    if double:
        top = g[: int(h * 0.5)]
        bottom = g[int(h * 0.42):]
        g = np.concatenate([
            cv2.resize(top, (OCR_W // 2, OCR_H), interpolation=cv2.INTER_LINEAR),
            cv2.resize(bottom, (OCR_W - OCR_W // 2, OCR_H), interpolation=cv2.INTER_LINEAR),
        ], axis=1)
    else:
        g = cv2.resize(g, (OCR_W, OCR_H), interpolation=cv2.INTER_LINEAR)
    return g


def ocr_sample(rng, split, cn_share=0.32, double_share=0.25):
    """One recogniser training sample: a plate in a patch of scene, degraded, rectified from a
    jittered quadrilateral (as the localiser would find it)."""
    _, family, _ = SPLITS[split]
    # Chinese plates are over-drawn: 31 province characters need more examples than digits.
    other = (1 - cn_share) / 4
    country = COUNTRIES[rng.choice(5, p=[other] * 4 + [cn_share])]
    country, text, double, plate = make_plate(rng, country, double_share=double_share)
    ph, pw = plate.shape[:2]
    width = rng.uniform(PLATE_MIN_PX * 0.9, PLATE_MAX_PX) * (0.62 if double else 1.0)
    hh = width * ph / pw
    W, H = int(width * 1.8 + 40), int(hh * 2.2 + 40)
    img = background(rng, family, W, H)
    night = rng.random() < 0.2
    if night:
        plate = np.clip(plate.astype(np.float32) * 1.3 + 40, 0, 255)
        img = (img * 0.3).astype(np.uint8)
    quad = perspective_quad(rng, pw, ph, W / 2, H / 2, width)
    paste_plate(img, plate, quad)
    img = degrade_image(rng, np.clip(img, 0, 255).astype(np.uint8), night)
    # Measured on the localiser (models/plate_loc.md): median 0.08 of the height, 90th
    # percentile 0.27; a mixture covers both.
    spread = np.array([0.08, 0.06]) if rng.random() < 0.7 else np.array([0.25, 0.18])
    jitter = rng.normal(0, 1, (4, 2)) * spread * hh
    crop = rectify(img, quad + jitter.astype(np.float32))
    # Laid out as the plate is: the appliance reads a crop both ways where its shape leaves
    # the layout open (`LAYOUT_ASPECTS` in edge/src/anpr/pipeline.rs) and keeps the likelier.
    return ocr_input(crop, double), text, country


# ---------------------------------------------------------------------------------------------
# Command line


def cmd_scenes(args):
    global ANY_REGION, PLATE_STYLE
    ANY_REGION = args.regions == "any"
    PLATE_STYLE = args.plate_style
    os.makedirs(args.out, exist_ok=True)
    off = SPLITS[args.split][0]
    with open(os.path.join(args.out, "labels.jsonl"), "w") as labels:
        n = 0
        for ci, c in enumerate(COUNTRIES):
            for i in range(args.first, args.first + args.per_country):
                seed = off + 1_000_000 + ci * 100_000 + i
                rng = np.random.default_rng(seed)
                text_rng = np.random.default_rng([seed, 1]) if args.hard else None
                img, plates = scene(rng, args.split, c, text_rng=text_rng)
                name = "%s_%04d.jpg" % (c.lower(), i)
                cv2.imwrite(os.path.join(args.out, name), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
                labels.write(json.dumps({"image": name, "plates": plates}, ensure_ascii=False) + "\n")
                n += 1
    print("%d scenes in %s" % (n, args.out), file=sys.stderr)


def cmd_video(args):
    """A truck driving through the camera's view with the given plate: frames for the
    end-to-end test."""
    rng = np.random.default_rng(args.seed)
    w, h = args.width, args.height
    bg = background(rng, 1, w, h)
    plate = render_plate(rng, args.country, args.text, 3 if args.country == "KZ" else 2, False)
    ph, pw = plate.shape[:2]
    out = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), args.fps, (w, h))
    frames = args.frames
    for i in range(frames):
        img = bg.copy()
        t = i / (frames - 1)
        # An empty lane for the first and last sixth; between, the truck approaches.
        if 1 / 6 <= t <= 5 / 6:
            u = (t - 1 / 6) * 1.5
            width = w * (0.12 + 0.12 * u)
            cy = h * (0.45 + 0.35 * u)
            vw = width * 3.2
            cv2.rectangle(img, (int(w / 2 - vw / 2), int(cy - 0.5 * h)), (int(w / 2 + vw / 2), int(cy + 0.15 * h)), (200, 30, 30), -1)
            quad = perspective_quad(np.random.default_rng(1), pw, ph, w / 2, cy, width, 0.3)
            paste_plate(img, plate, quad)
        frame = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        out.write(frame[..., ::-1].copy())
    out.release()
    print("%d frames in %s" % (frames, args.out), file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenes", help="1280x720 scenes with labels.jsonl")
    s.add_argument("--split", choices=SPLITS, default="test")
    s.add_argument("--per-country", type=int, default=200)
    s.add_argument("--first", type=int, default=0, help="index of each country's first scene (a later range is a second, untouched test set)")
    s.add_argument("--regions", choices=["real", "any"], default="real", help="region codes as issued, or any digits (to check a reader does not lean on the real ones)")
    s.add_argument("--hard", action="store_true", help="with the text around plates that real pictures have (the camera's date and counter, writing on the vehicles, screws, dealers' frames); the same scenes otherwise")
    s.add_argument("--plate-style", choices=["drawn", "real", "mixed"], default="drawn", help="single-row plates drawn as before (the default; the test sets so far), as real ones are (narrow type, no word spaces), or each either way")
    s.add_argument("--out", required=True)
    v = sub.add_parser("video", help="an MJPEG AVI of one truck passing")
    v.add_argument("--out", required=True)
    v.add_argument("--text", default="123ABC02")
    v.add_argument("--country", default="KZ")
    v.add_argument("--frames", type=int, default=40)
    v.add_argument("--fps", type=int, default=10)
    v.add_argument("--width", type=int, default=640)
    v.add_argument("--height", type=int, default=360)
    v.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    {"scenes": cmd_scenes, "video": cmd_video}[args.cmd](args)


if __name__ == "__main__":
    main()
