"""Speedup plot (torch median / fastrnn median) of a results file; optional, needs matplotlib.

    python bench/plot.py bench/results/<file>.json [out.png]

bench/run.py calls :func:`plot_speedups` itself after a run when matplotlib is importable.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional, Tuple


def _key(r: Dict) -> Tuple:
    return (r["op"], r["mode"], r["dtype"], json.dumps(r["shape"], sort_keys=True), r["packed"])


def _label(r: Dict) -> str:
    s = r["shape"]
    # (T, B, I, H) for the RNN ops, (T, B, C, S) for CTC
    shape = "x".join(str(s[k]) for k in ("T", "B", "I", "H", "C", "S") if k in s)
    if s.get("P"):
        shape += f"/P{s['P']}"
    tags = [r["op"], r["mode"], shape]
    if r["packed"]:
        tags.append("packed")
    if r["dtype"] != "float32":
        tags.append(r["dtype"])
    return " ".join(tags)


def speedups(results: List[Dict]) -> List[Tuple[str, float]]:
    by_key: Dict[Tuple, Dict[str, Dict]] = {}
    for r in results:
        by_key.setdefault(_key(r), {})[r["impl"]] = r
    out = []
    for rows in by_key.values():
        if "fastrnn" in rows and "torch" in rows:
            f, t = rows["fastrnn"], rows["torch"]
            out.append((_label(f), t["median_ms"] / f["median_ms"]))
    return out


def plot_speedups(data: Dict, png_path: str) -> Optional[str]:
    """Writes a horizontal bar chart of speedups; returns the path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = speedups(data["results"])
    if not pts:
        return None
    labels, values = zip(*pts)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(pts) + 1.5))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax.barh(range(len(pts)), values, color=colors)
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup over torch (torch median / fastrnn median), log scale")
    meta = data["meta"]
    where = meta.get("gpu") or meta.get("cpu")
    ax.set_title(f"fastrnn vs torch {meta.get('torch')} on {where}, {meta.get('threads')} threads",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__.strip())
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    png = argv[1] if len(argv) > 1 else argv[0].rsplit(".", 1)[0] + ".png"
    if plot_speedups(data, png) is None:
        print("plot skipped: matplotlib is not installed (or no fastrnn/torch pairs in the file)")
        return 1
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
