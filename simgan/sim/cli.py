"""`simgan simulate` (render a data set file) and `simgan show` (a labelled sample grid as PNG)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from simgan.io import SimganError, atomic_path, check_output_path, require_at_least

SIMULATORS = ("eyes", "hands")
GAZE_ARROW_PX = 25.0  # arrow length for a gaze vector lying in the image plane
NAME_CHARS = 28  # a longer file name is shown by its end (the part that tells files apart)
SHOW_LABELS = 3  # label columns shown under a generic panel


def register(subparsers) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="render a synthetic or surrogate-real data set into an HDF5 file",
        description="Render eyes (35x55 grayscale, gaze labels) or hands (SxS depth, 14 joints) into "
        "one data set file (docs/data_format.md). Same seed and chunk -> same bytes for any --workers.",
    )
    sim.add_argument("simulator", choices=SIMULATORS, help="eyes (gaze task) or hands (hand task)")
    sim.add_argument(
        "--domain",
        choices=("synthetic", "real"),
        default="synthetic",
        help="synthetic: the clean renderer (default); real: the surrogate real domain (sensor effects, "
        "its own pose distribution)",
    )
    sim.add_argument("--n", type=int, required=True, help="number of images")
    sim.add_argument("--seed", type=int, required=True, help="seed of every random draw (>= 0): same seed, same file")
    sim.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    sim.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    sim.add_argument("--chunk", type=int, default=None, help="images per chunk (part of the seed's meaning)")
    sim.add_argument("--size", type=int, default=None, help="hands only: depth map side S (default 64)")
    sim.add_argument("--supersample", type=int, default=None, help="eyes only: supersampling factor (default 2)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.set_defaults(func=run_simulate)

    show = subparsers.add_parser(
        "show",
        help="draw a labelled sample grid of a data set file as PNG",
        description="Gaze arrows (from the gaze vector) and eyelid landmarks on eyes; joints and "
        "skeleton on hands; the label values on generic files. Each panel is titled with its row "
        "and, where the file stores them, its source file name.",
    )
    show.add_argument("file", help="data set .h5 file")
    show.add_argument("--out", required=True, help="output .png")
    show.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    show.add_argument(
        "--seed", type=int, default=0, help="which rows to draw: a random choice with this seed (default 0)"
    )
    show.set_defaults(func=run_show)


def run_simulate(args: argparse.Namespace) -> int:
    for name in ("n", "workers", "chunk", "size", "supersample"):
        require_at_least(f"--{name}", getattr(args, name))
    require_at_least("--seed", args.seed, 0)
    if not args.out.endswith((".h5", ".hdf5")):
        raise SimganError(f"parameter '--out': expected a path ending in .h5, got {args.out!r}")
    check_output_path(args.out)
    options = {"workers": args.workers, "progress": not args.no_progress}
    if args.chunk is not None:
        options["chunk"] = args.chunk
    if args.simulator == "eyes":
        if args.size is not None:
            raise SimganError("parameter '--size': applies to hands only (eye images are 35x55)")
        from simgan.sim.eyes import simulate_eyes_to_file

        if args.supersample is not None:
            options["supersample"] = args.supersample
        simulate_eyes_to_file(args.out, args.n, args.seed, domain=args.domain, **options)
        what = "eye images (35x55)"
    else:
        if args.supersample is not None:
            raise SimganError("parameter '--supersample': applies to eyes only")
        hands = _hands_module()
        size = args.size or 64
        hands.simulate_hands_to_file(args.out, args.n, args.seed, domain=args.domain, size=size, **options)
        what = f"hand depth maps ({size}x{size})"
    print(f"wrote {args.n} {args.domain} {what} to {args.out}")
    return 0


def _hands_module():
    try:
        from simgan.sim import hands
    except ModuleNotFoundError as e:
        if e.name != "simgan.sim.hands":
            raise
        raise SimganError("simulator 'hands': module simgan.sim.hands is not available in this checkout") from None
    return hands


# ---------------------------------------------------------------------------------------------
# show


def run_show(args: argparse.Namespace) -> int:
    from simgan.data.format import open_dataset

    require_at_least("--n", args.n)
    require_at_least("--seed", args.seed, 0)  # numpy takes no negative seed
    if not args.out.endswith(".png"):
        raise SimganError(f"parameter '--out': expected a path ending in .png, got {args.out!r}")
    check_output_path(args.out)
    with open_dataset(args.file, require_labels=False) as ds:
        rows = np.sort(np.random.default_rng(args.seed).choice(ds.n, size=min(args.n, ds.n), replace=False))
        samples = [ds.read(rows=slice(int(r), int(r) + 1)) for r in rows]
        title = (
            f"{Path(args.file).name}: task={ds.task} domain={ds.domain} source={ds.attrs.get('source', '')} n={ds.n}"
        )
        render_grid(samples, rows, ds.task, title, args.out)
        print(f"wrote a grid of {len(rows)} of the {ds.n} rows of {args.file} to {args.out}")
    return 0


def render_grid(samples: list[dict], rows: np.ndarray, task: str, title: str, out: str | Path) -> None:
    """Draw one panel per sample (dicts of 1-row arrays) and save a PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(samples)
    cols = min(n, 4 if task == "hand" else 6)
    nrows = math.ceil(n / cols)
    panel_w, panel_h = (2.2, 2.2) if task == "hand" else (2.2, 1.6)
    fig = Figure(figsize=(cols * panel_w, nrows * panel_h + 0.5))
    FigureCanvasAgg(fig)  # attaches the Agg canvas: no pyplot, no global backend state
    fig.suptitle(title, fontsize=8)
    skeleton = _hand_skeleton() if task == "hand" else []
    for i, (sample, row) in enumerate(zip(samples, rows)):
        ax = fig.add_subplot(nrows, cols, i + 1)
        ax.set_axis_off()
        label = f"#{row}"
        if task == "hand":
            label += _draw_hand(ax, sample, skeleton)
        elif task == "gaze":
            label += _draw_eye(ax, sample)
        else:
            image = sample["images"][0]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(panel_title(sample, label, task), fontsize=6)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def panel_title(sample: dict, label: str, task: str) -> str:
    """A panel's title: `label` (row and drawn labels), the source file name where the file stores
    names, and for generic data the values of up to SHOW_LABELS label columns."""
    from simgan.data.format import FILES_KEY, LABELS_GROUP

    lines = [label]
    if FILES_KEY in sample:
        name = str(sample[FILES_KEY][0])
        lines.append(name if len(name) <= NAME_CHARS else "..." + name[-(NAME_CHARS - 3) :])
    if task == "generic":
        values = []
        for key in sorted(k for k in sample if k.startswith(LABELS_GROUP + "/")):
            v = np.ravel(sample[key][0])
            text = ",".join(f"{x:.3g}" for x in v[:3]) + (",..." if v.size > 3 else "")
            values.append(f"{key.split('/', 1)[1]}={text}")
        if values:
            shown = values[:SHOW_LABELS] + ([f"+{len(values) - SHOW_LABELS}"] if len(values) > SHOW_LABELS else [])
            lines.append(" ".join(shown))
    return "\n".join(lines)


def _draw_eye(ax, sample: dict) -> str:
    from simgan.sim.eyes import gaze_angles

    image = sample["images"][0]
    h, w = image.shape
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    if "landmarks" in sample:
        marks = sample["landmarks"][0]
        ax.plot(marks[:, 0], marks[:, 1], ".", color="yellow", markersize=2)
    if "gaze" not in sample:
        return " (unlabeled)"
    g = sample["gaze"][0]
    start = sample["pupil"][0] if "pupil" in sample else np.array([(w - 1) / 2, (h - 1) / 2])
    # Image x right, y down, camera along +z: the gaze's image-plane part is (g_x, g_y) as is.
    ax.arrow(
        start[0],
        start[1],
        GAZE_ARROW_PX * g[0],
        GAZE_ARROW_PX * g[1],
        color="red",
        width=0.4,
        head_width=2.0,
        length_includes_head=True,
    )
    if "pupil" in sample:
        ax.plot(*start, "c+", markersize=5)
    pitch, yaw = gaze_angles(g[None])[0]
    return f" p{pitch:+.0f} y{yaw:+.0f}"


def _draw_hand(ax, sample: dict, skeleton) -> str:
    depth = sample["depth"][0]
    # Background is exactly 1.0 (far); masking it lets the colour map span the hand's own depth.
    hand = np.ma.masked_greater_equal(depth, 1.0)
    ax.set_facecolor("black")
    ax.imshow(hand, cmap="viridis_r", interpolation="nearest")
    if "joints" not in sample:
        return " (unlabeled)"
    joints = sample["joints"][0]
    for a, b in skeleton:
        ax.plot(joints[[a, b], 0], joints[[a, b], 1], "-", color="white", linewidth=0.8)
    ax.scatter(joints[:, 0], joints[:, 1], s=6, c="red", zorder=3)
    return ""


def _hand_skeleton():
    try:
        return list(_hands_module().HAND_SKELETON)
    except SimganError:
        return []  # joints are still drawn; only the bones are missing
