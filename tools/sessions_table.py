"""Tables of tools/eval_sessions.sh: recall per map and query session, update times, alignment error, budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml


def recall(path: Path) -> tuple[float, float, int] | None:
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return d["recall"]["5cm_5deg"], d["recall"]["50cm_5deg"], d.get("localized_wrong", 0)


def fmt(r) -> str:
    return "-" if r is None else f"{r[0]:.1f} / {r[1]:.1f} ({r[2]})"


def num(v) -> str:
    """A figure with 2 decimals; '-' for None (no start published, nothing to average)."""
    return "-" if v is None else f"{v:.2f}"


def main() -> None:
    out, scenes = Path(sys.argv[1]), sys.argv[2:]
    print("Recall (%) at (5 cm, 5 deg) / (0.5 m, 5 deg) (localized outside 0.5 m / 5 deg) of each session's two "
          "query runs (300 queries)\n")
    print("| scene | map | keyframes | session 0 queries | session 1 queries | session 2 queries |")
    print("|---|---|---|---|---|---|")
    extra, tracks = [], []
    for s in scenes:
        D = out / s
        n = yaml.safe_load((D / "map-s0" / "manifest.yaml").read_text())["counts"]["keyframes"]
        for m, label in (("s0", "session 0"), ("s0+u1", "session 0 + update(session 1)"),
                         ("m01", "merge(session 0, session 1)"), ("m012", "merge(sessions 0, 1, 2)"),
                         (f"m012-b{n}", f"merge(sessions 0, 1, 2), --max-keyframes {n}")):
            man = D / f"map-{m}" / "manifest.yaml"
            if not man.is_file():
                continue
            k = yaml.safe_load(man.read_text())["counts"]["keyframes"]
            print(f"| {s} | {label} | {k} | " + " | ".join(fmt(recall(D / f"eval-{m}-q{q}.json")) for q in range(3)) + " |")
        moved = D / "map-m01-moved" / "manifest.yaml"
        if moved.is_file():
            man = yaml.safe_load(moved.read_text())
            T_true = np.array(yaml.safe_load((D / "map-s1-moved" / "manifest.yaml").read_text())["build"]["moved_by"])
            al = man["build"]["alignment"][1]
            T_fit = np.array(al["T"])  # x_s0 = T_fit x_moved; should be T_true^-1
            E = T_fit @ T_true
            dt = float(np.linalg.norm(E[:3, 3]))
            dr = float(np.degrees(np.arccos(np.clip((np.trace(E[:3, :3]) - 1) / 2, -1, 1))))
            extra.append(f"| {s} | {al['keyframes_agreeing']} / {al['keyframes_localized']} / "
                         f"{al['keyframes_sampled']} | {al['residual_m']['median']:.3f} / "
                         f"{al['residual_deg']['median']:.2f} | **{dt * 100:.2f} cm / {dr:.3f} deg** |")
        for f in sorted(D.glob("eval-*-q[02].json")):
            m, q = f.stem[len("eval-"):].rsplit("-q", 1)
            t = json.loads(f.read_text()).get("track")
            if t is None:
                continue
            ft = t["time_to_first_pose_s"]
            tracks.append(f"| {s} | {m} | session {q} | {t['starts']} | {t['published']} | "
                          f"{t.get('published_within_5cm_5deg', '-')} | **{t['published_wrong']}** | "
                          f"{t['starts_without_pose']} | {num(ft.get('p50'))} / {num(ft.get('p95'))} | "
                          f"{num(t['nees_mean_published'])} |")
        times = [(D / f"update-s{k}.time").read_text().split()[0] for k in (1, 2) if (D / f"update-s{k}.time").is_file()]
        if times:
            extra.append(f"| {s} | update times (s), session 1 into a 1-session map, session 2 into a 2-session map: "
                         f"{' / '.join(times)} | | |")
    print("\nSession 1's map moved by a known rigid transform (yaw 35 deg, pitch 2 deg, t (3, -2, 0.4) m), merged "
          "with --align auto\n")
    print("| scene | keyframes agreeing / localized / sampled | residual median (m / deg) | alignment error |")
    print("|---|---|---|---|")
    print("\n".join(extra))
    print("\nCold starts (reloc eval --track, odometry as in the bags, a start every 25 frames)\n")
    print("| scene | map | queries | starts | published | within (5 cm, 5 deg) | published wrong | starts without pose "
          "| first pose p50 / p95 (s) | NEES mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(tracks))


if __name__ == "__main__":
    main()
