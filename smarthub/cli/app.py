"""`smarthub app`: serve the Gradio app (127.0.0.1 by default; other hosts need --auth)."""
from __future__ import annotations

import argparse

from smarthub.cli._common import add_workspace_args, int_in
from smarthub.ui import DEFAULT_HOST, DEFAULT_PORT

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="open the web app (Bootstrap, Train, Clean, Predict, Annotate tabs)")
    add_workspace_args(p)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}; any other address requires --auth)")
    p.add_argument("--port", type=int_in(1, 65535), default=DEFAULT_PORT,
                   help=f"port 1..65535 (default {DEFAULT_PORT})")
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (mandatory off loopback)")
    p.add_argument("--demo", action="store_true",
                   help="build a demo workspace from the shipped sample images (in ./demo unless --data/--models), "
                        "train a quick model and open the app on it")
    p.add_argument("--no-train", action="store_true", help="with --demo: do not train the quick model")
    p.add_argument("--inbrowser", action="store_true", help="open a browser tab")
    p.set_defaults(func=run_app)


def run_app(args: argparse.Namespace) -> int:
    import sys

    from smarthub.cli._common import check_folders, report_recovery
    from smarthub.errors import SmartHubError
    from smarthub.ui import check_host, launch, parse_auth
    from smarthub.workspace import Workspace

    auth = parse_auth(args.auth)
    check_host(args.host, auth)  # refuse before any slow work
    if args.demo:
        from smarthub.demo import DEFAULT_DEMO_DIR, prepare_demo

        ws = Workspace.from_args(args.data or DEFAULT_DEMO_DIR / "data", args.models or DEFAULT_DEMO_DIR / "models")
        report = prepare_demo(ws, train=not args.no_train, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(report, file=sys.stderr)
    else:
        ws = Workspace.from_args(args.data, args.models)
        check_folders(ws)
        if args.data and not ws.data_dir.is_dir():  # a typo must not become a new empty workspace
            raise SmartHubError(f"--data {ws.data_dir} does not exist; check the spelling, or create it first "
                                f"(mkdir -p {ws.data_dir}) to start an empty workspace")
        report_recovery(ws)
    print(f"serving smarthub on http://{args.host}:{args.port} (data {ws.data_dir}, models {ws.models_dir}); "
          f"Ctrl-C stops", file=sys.stderr, flush=True)
    launch(ws, host=args.host, port=args.port, auth=auth, inbrowser=args.inbrowser, quiet=True)
    return 0
