"""The `mup` command line: `mup serve` (OpenAI-compatible server for a registry model)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys


def stop_on_signals() -> None:
    """SIGTERM and SIGINT stop a long-running command, whatever disposition it inherited:
    an ignored signal stays ignored across ``exec``, so a server started by a parent that
    ignores SIGTERM (a test runner, a supervisor) could otherwise only be SIGKILLed."""

    def _interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _serve(args) -> int:
    from mup_core.llm.local_client import LocalChatClient
    from mup_core.llm.server import ChatServer

    stop_on_signals()
    client = LocalChatClient(args.model)
    server = ChatServer(client, args.model, args.host, args.port, faults=args.fault)
    p = client.lm.precision
    print(f"serving {args.model} ({p.device}, {p.dtype_name}: {p.reason}) at {server.url} "
          "(POST /chat/completions, GET /models); Ctrl-C or SIGTERM to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt as stop:
        print(f"stopping ({stop or 'SIGINT'})", flush=True)
    finally:
        server.stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mup")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a registry model behind an OpenAI-compatible API")
    serve.add_argument("--model", default="smollm2-135m")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--fault", action="append", default=[], help="inject a failure: 429, 500, slow:SECONDS, malformed")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
