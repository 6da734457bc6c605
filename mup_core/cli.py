"""The `mup` command line: `mup serve` (OpenAI-compatible server for a registry model) and
`mup monitor` (a trained probe watching the model's conversations live)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from mup_core.models.registry import DEFAULT_MODEL


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


def _monitor(args) -> int:
    from mup_core.llm import make_client
    from mup_core.models.loading import load_model_cached
    from mup_core.monitor import BundleError, find_bundle, load_bundle
    from mup_core.monitor.live import LiveMonitor
    from mup_core.monitor.server import monitor_app
    from mup_core.paths import mup_home
    from mup_core.storage import store_from_env
    from mup_core.web import AppServer

    stop_on_signals()
    store = store_from_env(args.store)
    try:
        prefix = find_bundle(store, args.bundle, args.model)
        bundle, probe = load_bundle(store, prefix)
    except (BundleError, FileNotFoundError) as exc:
        print(f"mup monitor: {exc}", file=sys.stderr)
        return 2
    if args.uncertain:
        low, high = args.uncertain
        if not 0.0 <= low <= high <= 1.0:
            print(f"mup monitor: --uncertain needs 0 <= LOW <= HIGH <= 1, got {low} {high}", file=sys.stderr)
            return 2
        bundle.uncertain_band = (low, high)
    lm = load_model_cached(bundle.model)
    cache = str(mup_home() / "llm_cache.sqlite")
    if args.judge == "none":
        judge = None
    elif args.judge == "openai":
        if not args.judge_model:
            print("mup monitor: --judge openai needs --judge-model (and usually --judge-base-url)", file=sys.stderr)
            return 2
        judge = make_client("openai", args.judge_model, base_url=args.judge_base_url, cache_path=cache)
    else:
        judge = make_client("local", args.judge_model or bundle.model, cache_path=cache)
    server = AppServer(monitor_app(LiveMonitor(lm, bundle, probe, judge), store), args.host, args.port)
    p = lm.precision
    print(f"monitoring {bundle.model} ({p.device}, {p.dtype_name}) with {bundle.probe_type} at layer {bundle.layer}, "
          f"threshold {bundle.threshold:.3f}, uncertain band {bundle.uncertain_band[0]:.3f}-{bundle.uncertain_band[1]:.3f} "
          f"-> judge {getattr(judge, 'name', 'none')}; bundle {prefix}", flush=True)
    if bundle.question:
        print(f"prompted probe: scored at message ends with the question {bundle.question!r} appended", flush=True)
    print(f"page: {server.base}/  API: {server.base}/v1 (POST /chat/completions); Ctrl-C or SIGTERM to stop", flush=True)
    try:
        server.start().wait()
    except KeyboardInterrupt as stop:
        print(f"stopping ({stop or 'SIGINT'})", flush=True)
    finally:
        server.stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mup")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a registry model behind an OpenAI-compatible API")
    serve.add_argument("--model", default=DEFAULT_MODEL)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--fault", action="append", default=[], help="inject a failure: 429, 500, slow:SECONDS, malformed")
    serve.set_defaults(func=_serve)
    monitor = sub.add_parser("monitor", help="serve a trained probe as a live monitor (API and web page)")
    which = monitor.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help=f"serve the newest bundle of this model (default {DEFAULT_MODEL})")
    which.add_argument("--bundle", default=None, help="a bundle: its prefix in the store (monitors/MODEL/DIGEST) or a directory")
    monitor.add_argument("--store", default=None, help="a local artifact store root (default: the S3 bucket of "
                         "MUP_S3_BUCKET when set, else $MUP_HOME/artifacts)")
    monitor.add_argument("--host", default="127.0.0.1")
    monitor.add_argument("--port", type=int, default=8100)
    monitor.add_argument("--judge", choices=["local", "openai", "none"], default="local",
                         help="who decides scores in the uncertain band: the local model (default), an OpenAI-compatible "
                              "endpoint, or nobody")
    monitor.add_argument("--judge-model", default=None, help="judge model (default: the monitored model)")
    monitor.add_argument("--judge-base-url", default=None, help="judge endpoint for --judge openai (API key: OPENAI_API_KEY)")
    monitor.add_argument("--uncertain", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                         help="scores in [LOW, HIGH) go to the judge (default: the bundle's band below its threshold)")
    monitor.set_defaults(func=_monitor)
    args = parser.parse_args(argv)
    if args.command == "monitor" and not args.model and not args.bundle:
        args.model = DEFAULT_MODEL
    logging.basicConfig(level=logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
