"""Command line: `python -m seats_fx {demo,run,report,sample-clip,tiny-checkpoint}` (also installed as
`seats-fx`). A mistake in the command line or in a file it names ends with one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from seats_fx.commands import OneLineParser, UsageError, add_commands, check_options, positive_int


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="seats-fx", description="SEATS token selection for omni-modal LLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="tiny random-weight thinker on a synthetic clip: unpruned vs SEATS")
    demo.add_argument("--retention", type=float, default=None, help="sets video and audio retention (default 0.1)")
    demo.add_argument("--seconds", type=positive_int, default=None, help="clip length in seconds (default 20)")
    demo.add_argument("--compile", action="store_true",
                      help='also run torch.compile(backend="seats") against plain Inductor (~90 s more)')
    add_commands(commands)
    return parser


def _demo(args) -> int:
    import dataclasses

    from seats_fx.demo import DemoSpec, run_demo

    spec = DemoSpec()
    if args.retention is not None:
        check_options({"retention": args.retention})
        spec = dataclasses.replace(spec, options=(("retention", args.retention),))
    if args.seconds is not None:
        spec = dataclasses.replace(spec, clip=dataclasses.replace(spec.clip, video_seconds=args.seconds))
    if args.compile:
        spec = dataclasses.replace(spec, compiled=True)
    run_demo(spec)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit code (2, after one line on stderr, for a UsageError)."""
    try:
        args = _parser().parse_args(argv)
        return _demo(args) if args.command == "demo" else args.handler(args)
    except UsageError as error:
        # one line: messages quoting other libraries may span several
        print(f"seats-fx: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
