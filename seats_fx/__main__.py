"""Command line: `python -m seats_fx {demo,run,report,sample-clip,tiny-checkpoint}` (also installed as
`seats-fx`)."""

from __future__ import annotations

import argparse
import sys

from seats_fx.commands import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seats-fx", description="SEATS token selection for omni-modal LLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="tiny random-weight thinker on a synthetic clip: unpruned vs SEATS")
    demo.add_argument("--retention", type=float, default=None, help="sets video and audio retention (default 0.1)")
    demo.add_argument("--seconds", type=int, default=None, help="clip length in seconds (default 20)")
    demo.add_argument("--compile", action="store_true",
                      help='also run torch.compile(backend="seats") against plain Inductor (~90 s more)')
    add_commands(commands)
    args = parser.parse_args(argv)
    if args.command != "demo":
        return args.handler(args)
    import dataclasses

    from seats_fx.demo import DemoSpec, run_demo

    spec = DemoSpec()
    if args.retention is not None:
        spec = dataclasses.replace(spec, options=(("retention", args.retention),))
    if args.seconds is not None:
        spec = dataclasses.replace(spec, clip=dataclasses.replace(spec.clip, video_seconds=args.seconds))
    if args.compile:
        spec = dataclasses.replace(spec, compiled=True)
    run_demo(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
