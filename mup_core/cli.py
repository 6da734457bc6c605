"""The `mup` command line: `mup serve` (OpenAI-compatible server for a registry model)."""

from __future__ import annotations

import argparse
import logging
import sys


def _serve(args) -> int:
    from mup_core.llm.local_client import LocalChatClient
    from mup_core.llm.server import ChatServer

    client = LocalChatClient(args.model)
    server = ChatServer(client, args.model, args.host, args.port, faults=args.fault)
    print(f"serving {args.model} at {server.url} (POST /chat/completions, GET /models); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
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
