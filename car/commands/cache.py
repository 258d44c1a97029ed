"""`car cache info | prune`: the decoded-frame cache that `car train` builds."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from car.commands import add_config_options, bounded, config_from_args
from car.commands.train import frame_cache_cap, frame_cache_dir
from car.config import Config

SHOW = 20  # entries listed by `car cache info` before "... and N more"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("cache", help="show or trim the frame cache training builds")
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="where the cache is, its size against the cap, and "
                                       "its entries (most recently used first)")
    info.add_argument("--json", action="store_true", help="print JSON")
    add_config_options(info)
    info.set_defaults(handler=info_command)

    prune = sub.add_parser("prune", help="remove entries: least recently used first down to "
                                         "the cap (paths.frame_cache_max_gb), or as asked")
    prune.add_argument("--max-gb", type=bounded(float, 0, 1e6), metavar="GB",
                       help="trim to this size instead of the configured cap")
    prune.add_argument("--older-than", type=bounded(float, 0, 1e5), metavar="DAYS",
                       help="also remove entries not used for this many days")
    prune.add_argument("--all", action="store_true", help="remove every entry")
    prune.add_argument("--dry-run", action="store_true",
                       help="list what would be removed, remove nothing")
    add_config_options(prune)
    prune.set_defaults(handler=prune_command)


def cache_location(config: Config) -> Path:
    from training.cache import default_cache_dir

    return frame_cache_dir(config) or default_cache_dir()


def info_command(args: argparse.Namespace) -> int:
    from training.cache_admin import list_cache

    config = config_from_args(args)
    listing = list_cache(cache_location(config))
    cap = frame_cache_cap(config)
    if args.json:
        print(json.dumps({
            "path": str(listing.path), "size_bytes": listing.size_bytes, "cap_bytes": cap,
            "entries": [e.__dict__ | {"shape": list(e.shape) if e.shape else None}
                        for e in listing.entries],
            "leftovers": [str(p) for p in listing.leftovers],
            "building": [str(p) for p in listing.busy]}, indent=2))
        return 0
    cap_text = f"cap {gb(cap)} (paths.frame_cache_max_gb)" if cap else "no cap"
    print(f"frame cache  {listing.path}")
    print(f"size         {gb(listing.size_bytes)} in {len(listing.entries)} entr"
          f"{'y' if len(listing.entries) == 1 else 'ies'}, {cap_text}")
    now = time.time()
    for entry in listing.entries[:SHOW]:
        frames = f"{entry.frames} frames {entry.shape[2]}x{entry.shape[1]}" \
            if entry.shape and len(entry.shape) == 4 else "unreadable index"
        tubs = ", ".join(Path(t).name for t in entry.tubs[:3]) or "tubs not recorded"
        more = f" +{len(entry.tubs) - 3}" if len(entry.tubs) > 3 else ""
        print(f"  {entry.key}  {gb(entry.size_bytes):>8}  used {ago(now - entry.last_used):>9}"
              f"  {frames}  {tubs}{more}")
    if len(listing.entries) > SHOW:
        print(f"  ... and {len(listing.entries) - SHOW} more")
    if listing.leftovers:
        print(f"leftovers    {len(listing.leftovers)} file(s) of stopped builds or half "
              f"entries: `car cache prune` removes them")
    if listing.busy:
        print(f"building     {len(listing.busy)} file(s) of a build that is running now")
    return 0


def prune_command(args: argparse.Namespace) -> int:
    from training.cache_admin import prune

    config = config_from_args(args)
    path = cache_location(config)
    max_bytes: int | None = int(args.max_gb * 1e9) if args.max_gb is not None \
        else frame_cache_cap(config)
    older = args.older_than * 86400 if args.older_than is not None else None
    result = prune(path, max_bytes=max_bytes, older_than_s=older, everything=args.all,
                   dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in result.removed:
        print(f"{verb} {entry.key} ({gb(entry.size_bytes)}, used "
              f"{ago(time.time() - entry.last_used)})")
    leftovers = f" and {len(result.leftovers)} leftover file(s)" if result.leftovers else ""
    print(f"{verb} {len(result.removed)} entr{'y' if len(result.removed) == 1 else 'ies'}"
          f"{leftovers}, {gb(result.freed_bytes)}; {path} "
          f"{'would hold' if args.dry_run else 'holds'} "
          f"{gb(result.left.size_bytes)}")
    return 0


def gb(size: Any) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.0f} MB" if size >= 1e7 else f"{size / 1e6:.1f} MB"


def ago(seconds: float) -> str:
    if seconds < 120:
        return "just now"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit} ago"
    return "just now"
