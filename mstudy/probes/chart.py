"""``chart.png`` of the reversal probe: a small PNG bar chart drawn with numpy.

Bars per condition (forward and reverse accuracy, mean with min-max whiskers), the chance
line and a legend, in a 5x7 bitmap font; written as a PNG by hand, so the probe needs no
plotting library.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from mstudy.probes.result import ProbeResult

_FONT = {
    # 5x7 bitmap glyphs, one string of 7 rows of 5 bits per character
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "g": "00000 01111 10001 10001 01111 00001 01110",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "j": "00010 00000 00110 00010 00010 10010 01100",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 00000 11110 10001 11110 10000 10000",
    "q": "00000 00000 01101 10011 01111 00001 00001",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "y": "00000 00000 10001 10001 01111 00001 01110",
    "z": "00000 00000 11111 00010 00100 01000 11111",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    ";": "00000 01100 01100 00000 01100 00100 01000",
    "[": "01110 01000 01000 01000 01000 01000 01110",
    "]": "01110 00010 00010 00010 00010 00010 01110",
    "'": "00100 00100 01000 00000 00000 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}


def _text(
    canvas: Any, x: int, y: int, text: str, color: tuple[int, int, int], scale: int = 1
) -> int:
    """Draw ``text`` with its top-left corner at (x, y); return the x after it."""
    import numpy as np

    height, width = canvas.shape[:2]
    for ch in text.lower():
        glyph = _FONT.get(ch, _FONT[" "])
        rows = glyph.split()
        for r, bits in enumerate(rows):
            for c, bit in enumerate(bits):
                if bit == "1":
                    y0, x0 = y + r * scale, x + c * scale
                    if 0 <= y0 < height - scale + 1 and 0 <= x0 < width - scale + 1:
                        canvas[y0 : y0 + scale, x0 : x0 + scale] = np.array(color, dtype=np.uint8)
        x += 6 * scale
    return x


def _text_width(text: str, scale: int = 1) -> int:
    return 6 * scale * len(text)


def render_chart(result: ProbeResult) -> bytes:
    """A PNG bar chart: forward and reverse accuracy per condition, min-max whiskers, chance."""
    import numpy as np

    n = len(result.conditions)
    group_w, bar_w, left, top, plot_h = 150, 44, 60, 50, 260
    width = left + group_w * n + 20
    height = top + plot_h + 110
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    ink, grey = (30, 30, 30), (200, 200, 200)
    fwd_color, rev_color, chance_color = (90, 140, 200), (220, 110, 60), (120, 120, 120)
    base_y = top + plot_h
    title = f"reversal probe: student accuracy on held-out facts ({result.teacher} teacher)"
    _text(canvas, 10, 10, title, ink, 1)
    for pct in range(0, 101, 25):
        y = base_y - int(plot_h * pct / 100)
        canvas[y, left - 4 : width - 10] = grey
        label = f"{pct}%"
        _text(canvas, left - 8 - _text_width(label), y - 3, label, ink)
    canvas[top : base_y + 1, left - 1] = ink
    canvas[base_y, left - 1 : width - 10] = ink

    def y_of(value: float) -> int:
        return base_y - round(plot_h * max(0.0, min(1.0, value)))

    for i, cond in enumerate(result.conditions):
        gx = left + i * group_w + 20
        for j, (values, color) in enumerate(((cond.forward, fwd_color), (cond.reverse, rev_color))):
            if not values:
                continue
            mean = sum(values) / len(values)
            x0 = gx + j * (bar_w + 6)
            y = y_of(mean)
            canvas[y:base_y, x0 : x0 + bar_w] = np.array(color, dtype=np.uint8)
            lo, hi = y_of(min(values)), y_of(max(values))
            mid = x0 + bar_w // 2
            canvas[hi : lo + 1, mid] = ink
            canvas[hi, mid - 4 : mid + 5] = ink
            canvas[lo, mid - 4 : mid + 5] = ink
            label = f"{mean:.0%}"
            _text(canvas, mid - _text_width(label) // 2, max(top - 10, hi - 10), label, ink)
        words = cond.label.replace("(", "").replace(")", "").split()
        lines, line = [], ""
        for word in words:
            if line and _text_width(line + " " + word) > group_w - 10:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:3]):
            _text(canvas, gx, base_y + 8 + 10 * k, text, ink)
    # chance lines (reverse)
    cy = y_of(result.chance["reverse"])
    for x in range(left, width - 10, 6):
        canvas[cy, x : x + 3] = chance_color
    legend_y = base_y + 50
    canvas[legend_y : legend_y + 8, left : left + 14] = np.array(fwd_color, dtype=np.uint8)
    x = _text(canvas, left + 18, legend_y, "forward questions", ink)
    canvas[legend_y : legend_y + 8, x + 12 : x + 26] = np.array(rev_color, dtype=np.uint8)
    x = _text(canvas, x + 30, legend_y, "reverse questions", ink)
    for dx in range(x + 12, x + 30, 6):
        canvas[legend_y + 4, dx : dx + 3] = chance_color
    _text(canvas, x + 34, legend_y, f"chance (reverse) {result.chance['reverse']:.1%}", ink)
    seeds = result.settings["seeds"]
    foot = (
        f"{result.world['facts']} facts, {seeds} seeds, bars = mean, whiskers = min-max; "
        f"teacher yield {result.teacher_stats['yield']:.0%}, "
        f"precision {result.teacher_stats['precision']:.0%}"
    )
    _text(canvas, left, legend_y + 20, foot, ink)
    return _png(canvas)


def _png(canvas: Any) -> bytes:
    """Encode an RGB uint8 array as PNG."""
    height, width = canvas.shape[:2]
    raw = b"".join(b"\x00" + canvas[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


__all__ = ["render_chart"]
